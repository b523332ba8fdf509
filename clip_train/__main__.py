"""`python -m clip_train [overrides]`, also installed as `clip-train`: see clip_train/train.py and README.md."""

import sys

import hydra
from omegaconf import DictConfig

from clip_train.cli import quote_shard_ranges
from clip_train.paths import CONFIG_DIR


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> None:
    from clip_train.train import run  # imported here so that override errors report before the heavy imports

    run(cfg)


def main() -> None:
    sys.argv[1:] = quote_shard_ranges(sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()
