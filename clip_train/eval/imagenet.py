"""ImageNet's classes and prompts, bundled as data files (`benchmark_data/`), and its folder layouts.

A zero-shot root whose class folders are all ImageNet WordNet ids (`n01440764`, ...) or all class
indices (`0` ... `999`) is an ImageNet set, and gets OpenAI's class names and its 80 prompts unless
the task names others. That covers the standard layouts:

- ImageNet-1k val and ImageNet-Sketch: 1000 synset folders;
- ImageNet-A and ImageNet-R: their 200 synset folders, so the classifier has those 200 classes only,
  as their papers score them (the same classes the index lists of OpenCLIP and CLIP_benchmark pick);
- ImageNetV2 (`imagenetv2-*-format-val`): folders `0` ... `999`, named by class index.
"""

import functools
import os
import re
from collections.abc import Sequence

DATA_DIR = os.path.join(os.path.dirname(__file__), "benchmark_data")
WNID = re.compile(r"n\d{8}")


def data_lines(name: str) -> list[str]:
    """The non-blank, non-comment (#) lines of a bundled data file."""
    with open(os.path.join(DATA_DIR, name)) as f:
        return [line.rstrip("\n") for line in f if line.strip() and not line.startswith("#")]


@functools.cache
def imagenet_classes() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(WordNet ids, OpenAI's class names), both in class-index order (1000 each)."""
    rows = [line.split("\t") for line in data_lines("imagenet_classes.tsv")]
    return tuple(wnid for wnid, _ in rows), tuple(name for _, name in rows)


def imagenet_names(folders: Sequence[str]) -> list[str] | None:
    """OpenAI's class name of each folder when every folder is an ImageNet WordNet id or class index; else None."""
    wnids, names = imagenet_classes()
    if all(WNID.fullmatch(folder) for folder in folders):
        index = {wnid: i for i, wnid in enumerate(wnids)}
        if all(folder in index for folder in folders):
            return [names[index[folder]] for folder in folders]
        return None
    if sorted(int(folder) if folder.isdigit() else -1 for folder in folders) == list(range(len(names))):
        return [names[int(folder)] for folder in folders]  # all 1000 indices: a few digit folders are some other set
    return None
