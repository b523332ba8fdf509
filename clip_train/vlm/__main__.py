"""`python -m clip_train.vlm vision.checkpoint=CKPT [stage=align|instruct] [lm=FOLDER]`: see clip_train/vlm/run.py
and docs/vlm.md. With CLIP_TRAIN_COMPOSE_ONLY=FILE it only composes its config (clip_train/compose_only.py)."""

import sys

import hydra
from omegaconf import DictConfig

from clip_train import compose_only
from clip_train.cli import quote_shard_ranges, refuse_repeated_keys
from clip_train.override_check import refuse_unknown_keys
from clip_train.paths import CONFIG_DIR
from clip_train.vlm.shorthands import expand_group_shorthands


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="vlm")
def _hydra_main(cfg: DictConfig) -> None:
    from clip_train.vlm.run import run  # here, so that override errors report before the heavy imports

    run(cfg)


def main() -> None:
    refuse_repeated_keys(sys.argv[1:])
    sys.argv[1:] = expand_group_shorthands(quote_shard_ranges(sys.argv[1:]))
    refuse_unknown_keys("vlm", sys.argv[1:])
    if compose_only.requested():
        compose_only.write_composed("vlm", sys.argv[1:])
        return
    _hydra_main()


if __name__ == "__main__":
    main()
