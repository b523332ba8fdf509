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
