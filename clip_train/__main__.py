"""`python -m clip_train [overrides]`, also installed as `clip-train`: see clip_train/train.py and README.md."""

import hydra
from omegaconf import DictConfig

from clip_train.paths import CONFIG_DIR
from clip_train.train import run


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
