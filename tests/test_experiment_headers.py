"""Every experiment file says how to run it and what measures the result it promises (big_vision's habit).

A header opens with the command that runs the experiment, and its closing `# Measured by:` lines name
what produced the figures it quotes: that command, or a test (`tests/FILE.py::NAME`, which must
exist), or says that nothing has measured them yet. A figure with no named source goes stale
unnoticed; this keeps the source one grep away.
"""

import os
import re

import pytest

from clip_train.paths import CONFIG_DIR

EXPERIMENTS = sorted(name[: -len(".yaml")] for name in os.listdir(os.path.join(CONFIG_DIR, "experiment")))
TESTS_DIR = os.path.dirname(__file__)


def _header(name: str) -> list[str]:
    with open(os.path.join(CONFIG_DIR, "experiment", f"{name}.yaml")) as f:
        lines = f.read().splitlines()
    return [line[1:].strip() for line in lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))]]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_header_gives_the_command_and_what_measures_its_figures(name):
    header = _header(name)
    assert header[0] == "@package _global_"
    assert f"experiment={name}" in header[1] and re.match(r"(python|srun|sbatch) ", header[1]), header[1]
    measured = [i for i, line in enumerate(header) if line.startswith("Measured by:")]
    assert len(measured) == 1, f"experiment/{name}.yaml needs one '# Measured by:' line"
    source = " ".join(header[measured[0] :]).removeprefix("Measured by:").strip()  # it closes the header
    tests = re.findall(r"tests/(\w+\.py)::(\w+)", source)
    for file_name, test_name in tests:
        with open(os.path.join(TESTS_DIR, file_name)) as f:
            assert f"def {test_name}(" in f.read(), f"experiment/{name}.yaml names {file_name}::{test_name}, which is gone"
    assert tests or "the command above" in source or source.startswith("not yet measured"), source
