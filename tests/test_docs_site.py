"""The docs site builds with `mkdocs build --strict`: a broken link or anchor, or a page left out of the nav in
mkdocs.yml, fails the build (mkdocs.yml's `validation` turns each into a warning, and --strict into an error)."""

import glob
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mkdocs_builds_the_site_strictly_with_a_page_for_every_docs_file(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", os.path.join(REPO, "mkdocs.yml"),
         "--site-dir", str(tmp_path)],
        capture_output=True, text=True, env=dict(os.environ, NO_MKDOCS_2_WARNING="1"), timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    pages = glob.glob("**/*.md", root_dir=os.path.join(REPO, "docs"), recursive=True)
    missing = [page for page in pages if not os.path.exists(os.path.join(tmp_path, site_folder(page), "index.html"))]
    assert missing == []


def site_folder(page: str) -> str:
    """Where mkdocs writes a page's index.html: training.md -> training/, fine-tuning/index.md -> fine-tuning/."""
    return os.path.dirname(page) if os.path.basename(page) == "index.md" else page.removesuffix(".md")
