"""The README's examples, read as written, so the tests run exactly what a user copies."""

import os
import re

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def readme_section(heading: str) -> str:
    """The README text from `heading` (e.g. "## Using a trained model") to the next heading of any level."""
    with open(README) as f:
        readme = f.read()
    section = readme[readme.index(heading) :]
    return section[: re.search(r"\n##+ ", section[len(heading) :]).start() + len(heading)]


def python_code(*headings: str) -> str:
    """The ```python blocks of these README sections, joined in order."""
    return "\n".join(
        block for heading in headings for block in re.findall(r"```python\n(.*?)```", readme_section(heading), flags=re.S)
    )


def run_in_finished_run(code: str, checkpoint: str, folder, monkeypatch) -> dict:
    """Execute `code` in `folder`, which holds a run whose last checkpoint is `checkpoint` (the README's
    logs/train/runs/<time>/checkpoints/last.ckpt); returns the names it defined."""
    run_dir = folder / "logs" / "train" / "runs" / "2026-01-01_00-00-00" / "checkpoints"
    run_dir.mkdir(parents=True)
    os.symlink(checkpoint, run_dir / "last.ckpt")
    monkeypatch.chdir(folder)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace
