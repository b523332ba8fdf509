"""`python -m clip_train [overrides]`, also installed as `clip-train`: see clip_train/train.py and README.md."""

import sys

import hydra
from omegaconf import DictConfig

from clip_train import compose_only
from clip_train.cli import quote_shard_ranges, refuse_repeated_keys
from clip_train.override_check import refuse_unknown_keys
from clip_train.paths import CONFIG_DIR


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> None:
    from clip_train.train import run  # imported here so that override errors report before the heavy imports

    run(cfg)


def main() -> None:
    refuse_repeated_keys(sys.argv[1:])
    sys.argv[1:] = quote_shard_ranges(sys.argv[1:])
    refuse_unknown_keys("train", sys.argv[1:])
    if compose_only.requested():
        compose_only.write_composed("train", sys.argv[1:])
        return
    _hydra_main()


if __name__ == "__main__":
    main()
