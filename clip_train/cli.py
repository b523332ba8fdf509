"""Command-line checks and conveniences applied before Hydra parses the overrides.

Bash expands an unquoted `data.train_shards=/d/{00000..00331}.tar` into 332 arguments, each
`data.train_shards=/d/NNNNN.tar`, and Hydra keeps the last one: the run would train on one shard
without a word. So a key given more than once is refused (`refuse_repeated_keys`), with the quoted
form to type instead. A brace range that did reach us whole (quoted by the user) is quoted again
for Hydra, whose grammar reads `{` as a dict (`quote_shard_ranges`).
"""

import re
from collections import defaultdict

from clip_train.shard_patterns import brace_form

# `{00000..00331}` is webdataset's shard range, but Hydra's grammar reads `{` as a dict.
_BRACE_RANGE = re.compile(r"\{\d+\.\.\d+\}")


def quote_shard_ranges(overrides: list[str]) -> list[str]:
    """Quote override values holding brace ranges, so `data.train_shards='/d/{000..009}.tar'` reaches Hydra
    whole (the shell has already removed the quotes the user wrote)."""
    quoted = []
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and _BRACE_RANGE.search(value) and not value.startswith(("'", '"', "[")):
            escaped = value.replace("\\", "\\\\").replace("'", "\\'")
            override = f"{key}='{escaped}'"
        quoted.append(override)
    return quoted


def override_key(argument: str) -> str | None:
    """The config key an override sets (`+data.x=1` -> `data.x`, `hydra/launcher=slurm` -> `hydra/launcher`);
    None for a flag such as `-m` or `--cfg`."""
    if argument.startswith("-") or "=" not in argument:
        return None
    return argument.partition("=")[0].lstrip("+~")


def repeated_keys_message(overrides: list[str]) -> str | None:
    """Why these overrides cannot run when one key is given more than once, or None when none is."""
    given = defaultdict(list)
    for argument in overrides:
        key = override_key(argument)
        if key is not None:
            given[key].append(argument.partition("=")[2])
    repeated = {key: values for key, values in given.items() if len(values) > 1}
    if not repeated:
        return None
    key, values = next(iter(repeated.items()))
    shown = ", ".join(values[:3]) + (f", ... {values[-1]}" if len(values) > 3 else "")
    return (
        f"{key} was given {len(values)} times on the command line ({shown}); Hydra would keep only the last. "
        f"An unquoted brace pattern is expanded by the shell into one argument per shard: quote it, "
        f"{key}='{brace_form(values)}'"
        + (f" (also repeated: {', '.join(sorted(set(repeated) - {key}))})" if len(repeated) > 1 else "")
    )


# what Lightning appends to this entry point's arguments when it starts the other local ranks of a DDP run itself
# (lightning.fabric.strategies.launchers.subprocess_script._hydra_subprocess_cmd); a user's hydra.run.dir repeats there
_LIGHTNING_RELAUNCH = (re.compile(r"hydra\.run\.dir=.*"), re.compile(r"hydra\.job\.name=train_ddp_process_\d+"),
                       re.compile(r"hydra\.output_subdir=null"))  # fmt: skip


def typed_overrides(overrides: list[str]) -> list[str]:
    """The overrides as the user typed them: without the three Lightning adds in a process it started for another
    local rank (the launching process checked the user's part already)."""
    tail = overrides[-len(_LIGHTNING_RELAUNCH) :]
    if len(tail) == len(_LIGHTNING_RELAUNCH) and all(p.fullmatch(a) for p, a in zip(_LIGHTNING_RELAUNCH, tail)):
        return overrides[: -len(_LIGHTNING_RELAUNCH)]
    return overrides


def refuse_repeated_keys(overrides: list[str]) -> None:
    """Exit (status 1, before anything is built) with `repeated_keys_message` when a key is given more than once."""
    message = repeated_keys_message(typed_overrides(overrides))
    if message is not None:
        raise SystemExit(f"Error: {message}")
