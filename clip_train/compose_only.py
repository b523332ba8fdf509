"""A dry run of the command line: `CLIP_TRAIN_COMPOSE_ONLY=FILE python -m clip_train ...` composes the config of
every job the command would run, appends each to FILE as one JSON line, and exits without building anything.

Hydra's own `--cfg job` shows one config but refuses `-m` sweeps and launcher overrides; this takes the command
exactly as a user types it (after the entry point's checks: repeated keys, brace ranges), splits sweeps the way
Hydra's basic sweeper does, and composes each job. The README test runs every shell example this way
(tests/test_readme_commands.py) to see that each shard pattern reaches the config whole.
"""

import json
import os

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from clip_train.paths import CONFIG_DIR

ENV = "CLIP_TRAIN_COMPOSE_ONLY"


def requested() -> bool:
    return bool(os.environ.get(ENV))


def job_overrides(arguments: list[str]) -> list[list[str]]:
    """The overrides of every job of a command line (flags such as `-m` and `--cfg job` dropped; each sweep `a,b`
    split the way Hydra's basic sweeper splits it)."""
    given = [a for a in arguments if not a.startswith("-") and ("=" in a or a.startswith("~"))]
    overrides = OverridesParser.create().parse_overrides(given)
    return [list(job) for job in BasicSweeper.split_arguments(overrides, None)[0]]  # one batch: every combination


def write_composed(config_name: str, arguments: list[str]) -> None:
    """Append the unresolved config of each job of `arguments` (overrides, and flags such as `-m` that are dropped)
    to the file named by $CLIP_TRAIN_COMPOSE_ONLY, one JSON object per line."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"), open(os.environ[ENV], "a") as out:
        for job in job_overrides(arguments):
            cfg = compose(config_name, overrides=job)
            out.write(json.dumps(OmegaConf.to_container(cfg, resolve=False)) + "\n")
