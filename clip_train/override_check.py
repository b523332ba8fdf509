"""A misspelt key on the command line named with a suggestion, for every config group alike.

Hydra refuses `data.batch_sze=8` with "Key 'batch_sze' is not in struct" and advises `+data.batch_sze=8`,
which would only move the error (the config check then names it). So before Hydra runs, the entry points
compose the command's first job once (~0.1 s); when Hydra cannot override a key, the message names the key,
the closest existing one and the keys that node has. Any other error is left to Hydra's own report.
"""

import difflib
import re

from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, OverrideParseException
from omegaconf import DictConfig, OmegaConf

from clip_train.cli import override_key
from clip_train.compose_only import job_overrides
from clip_train.paths import CONFIG_DIR

_NOT_OVERRIDABLE = re.compile(r"Could not override '([^']+)'")


def _suggestion(cfg: DictConfig, key: str) -> str | None:
    """The message for `key`, which `cfg` lacks: the deepest node it has, the closest child and the children."""
    node, parts = OmegaConf.to_container(cfg, resolve=False), key.split(".")  # unresolved: no ${hydra:...} needed
    for depth, part in enumerate(parts):
        if not isinstance(node, dict):
            return None
        if part not in node:
            if parts[0] == "hydra":
                return None  # Hydra's own node: its message stands
            parent = ".".join(parts[:depth])
            prefix, where = (f"{parent}.", parent) if parent else ("", "the config")
            names = sorted(str(name) for name in node.keys())
            nested = [f"{n}.{c}" for n in names if isinstance(node[n], dict) for c in node[n]]
            close = (
                difflib.get_close_matches(part, names, n=1)
                or [
                    path
                    for path in nested
                    if path.rsplit(".", 1)[1] in difflib.get_close_matches(part, [path.rsplit(".", 1)[1]])
                ][:1]
            )  # optim.lr -> optim.optimizer.lr
            hint = f" Did you mean '{prefix}{close[0]}'?" if close else ""
            return f"Unknown config key '{key}': {where} has no '{part}'.{hint} Keys of {where}: {', '.join(names)}"
        node = node[part]
    return None


def unknown_key_message(config_name: str, arguments: list[str]) -> str | None:
    """Why the overrides in `arguments` name a key config `config_name` does not have, or None."""
    try:
        job = job_overrides(arguments)[0]
    except OverrideParseException:
        return None
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        try:
            compose(config_name, overrides=job)
            return None
        except ConfigCompositionException as error:
            match = _NOT_OVERRIDABLE.search(str(error))
            if match is None:
                return None
            key = match[1]
        try:
            cfg = compose(config_name, overrides=[o for o in job if override_key(o) != key])
        except ConfigCompositionException:
            return None
    return _suggestion(cfg, key)


def refuse_unknown_keys(config_name: str, arguments: list[str]) -> None:
    """Exit (status 1, before anything is built) with `unknown_key_message` when an override names no key."""
    message = unknown_key_message(config_name, arguments)
    if message is not None:
        raise SystemExit(f"Error: {message}")
