"""An image folder with captions beside the images: `KEY.jpg` (or png, webp, jpeg) and `KEY.txt`, at any depth.

The pairs are the images that have a caption file, sorted by path; an image without one is left out
and counted at start-up (a warning says how many). A folder of .tar files and no captioned image is not
claimed: it is tar shards named by their folder (`clip_train.data.shards` says how to name them), and a
saved Hugging Face dataset is the `hf` kind's. A folder is read in units of pairs
(`clip_train.data.row_source`); each DataLoader worker lists it once. A caption file that cannot be read
while training (deleted after start-up) is a bad row, skipped and counted.
"""

import functools
import glob
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

from clip_train.data.arrow_source import is_saved_dataset, saved_splits
from clip_train.data.row_samples import MEMBERS
from clip_train.data.row_source import Row, RowSource, Unreadable

log = logging.getLogger(__name__)


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


def holds_tars_only(folder: str) -> bool:
    """A folder of .tar files and no captioned image: the user meant its shards."""
    return bool(glob.glob(os.path.join(glob.escape(folder), "*.tar"))) and not folder_pairs(folder)[0]


@dataclass(frozen=True)
class ImageFolder(RowSource):
    """A folder of KEY.jpg + KEY.txt pairs (see the module docstring); one part, the folder, keyed by relative path."""

    name = "folder"

    def claims(self, path: str) -> bool:
        return os.path.isdir(path) and not is_saved_dataset(path) and not saved_splits(path) and not holds_tars_only(path)

    def parts(self, path: str) -> list[tuple[str, int]]:
        pairs, uncaptioned = folder_pairs(path)
        if uncaptioned:
            log.warning("%s: %d images have no KEY.txt caption beside them and are left out", path, uncaptioned)
        return [(path, len(pairs))]

    def rows(self, part: str, start: int, stop: int) -> Iterator[Row | Unreadable]:
        for relative in folder_pairs(part)[0][start:stop]:
            stem = os.path.splitext(relative)[0]
            try:
                with open(os.path.join(part, f"{stem}.txt"), "rb") as f:
                    caption = f.read().decode("utf-8", errors="replace").strip()
            except OSError as error:
                yield Unreadable(stem, f"its caption file: {error.__class__.__name__}: {error}")
                continue
            yield Row(stem, caption, relative)
