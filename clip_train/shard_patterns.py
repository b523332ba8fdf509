"""The brace pattern a list of numbered shard paths came from, for messages that show what to type instead.

Used where the shell already expanded a pattern (`clip_train.cli`) and where a directory was given instead of its
shards (`clip_train.data.shards`). Pure Python, so the command line can use it before any heavy import.
"""

import re

# the last run of digits in a path: the part a brace range varies
_LAST_NUMBER = re.compile(r"^(.*?)(\d+)(\D*)$")


def brace_form(values: list[str]) -> str:
    """The brace pattern bash would have expanded into `values` (`/d/00000.tar`, `/d/00001.tar` ->
    `/d/{00000..00001}.tar`), or `PATTERN` when they are not one numbered run."""
    parts = [_LAST_NUMBER.match(value) for value in values]
    if all(parts) and len({(p[1], p[3], len(p[2])) for p in parts}) == 1:
        numbers = [p[2] for p in parts]
        if [int(n) for n in numbers] == list(range(int(numbers[0]), int(numbers[0]) + len(numbers))):
            return f"{parts[0][1]}{{{numbers[0]}..{numbers[-1]}}}{parts[0][3]}"
    return "PATTERN"
