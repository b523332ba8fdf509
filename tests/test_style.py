"""The code style CI holds the project to: `ruff check` and `ruff format --check` (pyproject.toml's [tool.ruff])
over the package, the tests and the scripts, so a commit that breaks either fails the suite, not a reviewer."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("ruff", reason="ruff comes with the dev extra: pip install -e '.[dev]'")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKED = ["clip_train", "tests", "scripts"]


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_passes(command):
    result = subprocess.run([sys.executable, "-m", "ruff", *command, *CHECKED], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
