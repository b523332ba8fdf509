"""The README's and the docs pages' examples, read as written, so the tests run exactly what a user copies."""

import glob
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def documents() -> list[str]:
    """Paths, relative to the repository, of README.md and every page under docs/ (sorted), the files whose
    blocks the tests run."""
    pages = glob.glob("docs/**/*.md", root_dir=REPO, recursive=True)
    return ["README.md", *sorted(pages)]


def read_document(path: str) -> str:
    with open(os.path.join(REPO, path)) as f:
        return f.read()


def heading_positions(text: str) -> list[tuple[int, int, str]]:
    """(start offset, level, title) of every Markdown heading of `text`, fenced code blocks skipped (a `# comment`
    in a bash or YAML block is no heading)."""
    found, offset, fenced = [], 0, False
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"(#+) (.*\S)", line)):
            found.append((offset, len(match.group(1)), match.group(2)))
        offset += len(line)
    return found


def readme_section(heading: str) -> str:
    """The text of the one section titled `heading` (e.g. "## Using a trained model"; its #s may name any level, so a
    section keeps its tests when it moves between README.md and a docs page) up to the next heading of any level,
    searched in README.md and every docs page; no such section, or several, is an error naming the files."""
    title = heading.lstrip("#").strip()
    found = []
    for path in documents():
        text = read_document(path)
        starts = heading_positions(text)
        for index, (start, _, name) in enumerate(starts):
            if name == title:
                end = starts[index + 1][0] if index + 1 < len(starts) else len(text)
                found.append((path, text[start:end]))
    if len(found) != 1:
        raise LookupError(f"section {title!r}: found in {[path for path, _ in found]} (README.md and docs/**/*.md), not once")
    return found[0][1]


def python_code(*headings: str) -> str:
    """The ```python blocks of these sections (README.md or docs pages), joined in order."""
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
