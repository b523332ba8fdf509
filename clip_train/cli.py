"""Command-line conveniences applied before Hydra parses the overrides."""

import re

# `{00000..00331}` is webdataset's shard range, but Hydra's grammar reads `{` as a dict.
_BRACE_RANGE = re.compile(r"\{\d+\.\.\d+\}")


def quote_shard_ranges(overrides: list[str]) -> list[str]:
    """Quote override values holding brace ranges, so `data.train_shards=/d/{000..009}.tar` works
    as typed (the shell has already removed any quotes the user wrote)."""
    quoted = []
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and _BRACE_RANGE.search(value) and not value.startswith(("'", '"', "[")):
            escaped = value.replace("\\", "\\\\").replace("'", "\\'")
            override = f"{key}='{escaped}'"
        quoted.append(override)
    return quoted


def open_zeroshot_sets(overrides: list[str]) -> list[str]:
    """Let `eval.zeroshot.NAME.KEY=VALUE` add a new zero-shot set as well as change a configured one
    (Hydra would otherwise demand `+` for a new NAME): such overrides become `++` (add or override)."""
    return ["++" + o if o.startswith("eval.zeroshot.") and "=" in o else o for o in overrides]


def prepare_overrides(overrides: list[str]) -> list[str]:
    """Every convenience above, in order: what both `python -m clip_train` and `clip_train.evaluate` apply."""
    return open_zeroshot_sets(quote_shard_ranges(overrides))
