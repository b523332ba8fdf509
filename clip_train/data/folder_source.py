"""An image folder with captions beside the images: `KEY.jpg` (or png, webp, jpeg) and `KEY.txt`, at any depth.

The pairs are the images that have a caption file, sorted by path; an image without one is left out
and counted at start-up (`folder_pairs` says how many). A folder is read in units of pairs
(`<folder>#<start>:<stop>`, `clip_train.data.source_kinds`); each DataLoader worker lists it once.
"""

import functools
import os
from collections.abc import Iterator

from clip_train.data.row_samples import MEMBERS, row_sample


@functools.lru_cache(maxsize=4)
def folder_pairs(folder: str) -> tuple[tuple[str, ...], int]:
    """(the images with a caption file, as paths relative to `folder`, sorted; how many images had none)."""
    images, uncaptioned = [], 0
    for parent, _, files in os.walk(folder):
        names = set(files)
        for name in files:
            stem, extension = os.path.splitext(name)
            if extension.lower() not in MEMBERS:
                continue
            if f"{stem}.txt" in names:
                images.append(os.path.relpath(os.path.join(parent, name), folder))
            else:
                uncaptioned += 1
    return tuple(sorted(images)), uncaptioned


def folder_samples(unit: str, folder: str, start: int, stop: int) -> Iterator[dict]:
    """Pairs start..stop-1 of the folder as samples (`clip_train.data.row_samples`), keyed by relative path."""
    images = folder_pairs(folder)[0]
    for relative in images[start:stop]:
        stem = os.path.splitext(relative)[0]
        with open(os.path.join(folder, f"{stem}.txt"), "rb") as f:
            caption = f.read().decode("utf-8", errors="replace").strip()
        yield row_sample(unit, stem, caption, relative, folder)
