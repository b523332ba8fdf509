"""docs/reference/configuration.md is generated from configs/ and kept fresh; the line reader behind it finds every key
YAML itself finds, with the comments written beside it."""

import glob
import os

import pytest
import yaml

from clip_train.config_reference import COMMAND, Key, Option, read_option, reference
from clip_train.paths import CONFIG_DIR

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(glob.glob("**/*.yaml", root_dir=CONFIG_DIR, recursive=True))


def test_the_committed_reference_is_what_the_configs_generate():
    with open(os.path.join(REPO, "docs", "reference", "configuration.md")) as f:
        committed = f.read()
    assert committed == reference(), f"docs/reference/configuration.md is stale: refresh it with `{COMMAND}`"


def dotted_keys(node: dict, prefix: str = "") -> list[str]:
    """Every key of a parsed YAML mapping, nested ones dotted, in file order."""
    keys = []
    for name, value in node.items():
        keys.append(prefix + str(name))
        if isinstance(value, dict):
            keys += dotted_keys(value, f"{prefix}{name}.")
    return keys


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_key_yaml_reads_is_in_the_reference(name):
    path = os.path.join(CONFIG_DIR, name)
    with open(path) as f:
        parsed = yaml.safe_load(f) or {}
    expected = dotted_keys({key: value for key, value in parsed.items() if key != "defaults"})
    assert [key.path for key in read_option(path).keys] == expected
    assert len(read_option(path).defaults) == len(parsed.get("defaults", []))


def test_comments_values_and_defaults_are_read_as_written(tmp_path):
    path = tmp_path / "option.yaml"
    path.write_text(
        "# @package _global_\n"
        "# python -m clip_train thing=option \\\n"
        "#     more=args\n"
        "defaults:\n"
        "  - override /data: webdataset  # your shards\n"
        "  - _self_\n"
        "\n"
        "# the model\n"
        "model:\n"
        "  embed_dim: 512  # width of the shared space\n"
        '  filename: "step{step:08d}"  # a # inside quotes stays\n'
        "  url: http://host/a#b\n"
        "signals:  # caught\n"
        "  - SIGTERM\n"
        "  - SIGUSR1  # requeue\n"
    )
    assert read_option(str(path)) == Option(
        description=["@package _global_", "python -m clip_train thing=option \\", "    more=args"],
        defaults=["override /data: webdataset  (your shards)", "_self_"],
        keys=[
            Key("model", "", "the model"),
            Key("model.embed_dim", "512", "width of the shared space"),
            Key("model.filename", '"step{step:08d}"', "a # inside quotes stays"),
            Key("model.url", "http://host/a#b", ""),
            Key("signals", "- SIGTERM - SIGUSR1", "caught requeue"),
        ],
    )


def test_a_line_that_is_no_key_is_refused_by_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model:\n  just words\n")
    with pytest.raises(ValueError, match=r"broken.yaml: cannot read the line '  just words'"):
        read_option(str(path))
