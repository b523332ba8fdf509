"""The configuration reference, generated from configs/ so that it cannot drift from them:

    python -m clip_train.config_reference > docs/reference/configuration.md

Every primary config (train.yaml, evaluate.yaml, ...) and every group (a folder: `model`, `model/text_tower`,
`eval/task`, ...) with each of its options (a file) and each key of the option, dotted, with its value as written
and the comments written beside it (on the key's line and on the lines just above it). A file's leading comments
describe the option and are shown as written. tests/test_config_reference.py fails when the committed page differs
from this output.

The YAML is read line by line, not through a YAML parser, because parsers drop comments; the test checks the keys
read here against yaml.safe_load's.
"""

import os
import re
import sys
from dataclasses import dataclass

from clip_train.paths import CONFIG_DIR

COMMAND = "python -m clip_train.config_reference > docs/reference/configuration.md"
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[^\s#'\"\-][^#'\"]*?):(?:\s+(?P<rest>.*))?$")


@dataclass
class Key:
    """One key of a YAML file: its dotted path from the file's top, its value as written ("" for a mapping, the
    items joined for a block list) and its comment."""

    path: str
    value: str
    comment: str


@dataclass
class Option:
    """One YAML file: its leading comment lines, its `defaults` list items and its keys, in file order."""

    description: list[str]
    defaults: list[str]
    keys: list[Key]


def split_comment(text: str) -> tuple[str, str]:
    """ "value  # comment" -> ("value", "comment"); a # inside quotes, or not after a space, belongs to the value."""
    quote = None
    for index, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or text[index - 1] == " "):
            return text[:index].rstrip(), text[index + 1 :].strip()
    return text.rstrip(), ""


def read_option(path: str) -> Option:
    """The description, defaults and keys of the YAML file at `path`."""
    with open(path) as f:
        lines = f.read().splitlines()
    description, pending, defaults, keys = [], [], [], []
    parents: list[tuple[int, str]] = []  # (indent, key) of the mappings the current line sits in
    in_defaults = False
    seen_content = False
    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            if seen_content:
                pending.append(stripped.lstrip("#").strip())
            else:  # the file's description, shown as written: indentation after "# " is kept
                description.append(stripped.removeprefix("#").removeprefix(" ").rstrip())
            continue
        seen_content = True
        if stripped.startswith("- "):  # an item of a block list: the defaults list's, or a key's value
            item, comment = split_comment(stripped[2:])
            if in_defaults:
                defaults.append(item + (f"  ({comment})" if comment else ""))
            elif keys:
                keys[-1].value = f"{keys[-1].value} - {item}".strip()
                keys[-1].comment = " ".join(part for part in (keys[-1].comment, *pending, comment) if part)
            pending = []
            continue
        match = KEY_LINE.match(line)
        if not match:
            raise ValueError(f"{path}: cannot read the line {line!r} as `key: value`")
        indent, key = len(match.group("indent")), match.group("key").strip()
        value, comment = split_comment(match.group("rest") or "")
        while parents and parents[-1][0] >= indent:
            parents.pop()
        in_defaults = not parents and key == "defaults"
        if in_defaults:
            pending = []
            continue
        dotted = ".".join([*(name for _, name in parents), key])
        keys.append(Key(dotted, value, " ".join([*pending, comment]).strip()))
        pending = []
        if not value:
            parents.append((indent, key))
    return Option(description, defaults, keys)


def escape(text: str) -> str:
    """Comment text for Markdown: code spans kept as written; outside them, characters that would start emphasis
    or an HTML tag are escaped."""
    parts = text.split("`")
    for index in range(0, len(parts), 2):  # outside code spans
        parts[index] = re.sub(r"([*_\\])", r"\\\1", parts[index]).replace("<", "&lt;")
    return "`".join(parts) if len(parts) % 2 else "`".join(parts[:-1]) + "\\`" + parts[-1]


def code(text: str) -> str:
    """`text` as a code span, wide enough for the backticks it holds."""
    ticks = "``" if "`" in text else "`"
    return f"{ticks}{text}{ticks}" if ticks == "`" else f"{ticks} {text} {ticks}"


def option_section(heading: str, option: Option) -> list[str]:
    lines = [heading, ""]
    if option.description:  # as written: the leading comments often hold commands and aligned columns
        lines += ["```text", *option.description, "```", ""]
    if option.defaults:
        lines += ["Defaults list: " + ", ".join(code(item) for item in option.defaults) + ".", ""]
    for key in option.keys:
        value = f": {code(key.value)}" if key.value else ""
        comment = f" — {escape(key.comment)}" if key.comment else ""
        lines.append(f"- {code(key.path)}{value}{comment}")
    return lines + ([""] if option.keys else [])


def yaml_files(folder: str) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.endswith(".yaml"))


def reference(config_dir: str = CONFIG_DIR) -> str:
    """The whole Markdown page for the config tree at `config_dir`."""
    lines = [
        "# Configuration reference",
        "",
        f"Generated from `configs/` by `{COMMAND}`; do not edit it by hand.",
        "Pick an option of a group with `group=option` and set a key with `key=value` (the keys of a group's",
        "option sit under the group's name, e.g. `model.embed_dim`, unless its file says `@package`).",
        "",
        "## Primary configs",
        "",
    ]
    for name in yaml_files(config_dir):
        lines += option_section(f"### `{name}`", read_option(os.path.join(config_dir, name)))
    groups = sorted(
        os.path.relpath(folder, config_dir)
        for folder, _, files in os.walk(config_dir)
        if folder != config_dir and any(name.endswith(".yaml") for name in files)
    )
    for group in groups:
        folder = os.path.join(config_dir, group)
        options = [name.removesuffix(".yaml") for name in yaml_files(folder)]
        lines += [f"## Group `{group}`", "", "Options: " + ", ".join(code(option) for option in options) + ".", ""]
        for option in options:
            lines += option_section(f"### `{group}={option}`", read_option(os.path.join(folder, f"{option}.yaml")))
    return "\n".join(lines).rstrip("\n") + "\n"


def main() -> None:
    sys.stdout.write(reference())


if __name__ == "__main__":
    main()
