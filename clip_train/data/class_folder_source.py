"""An ImageFolder of classes (`ROOT/CLASS/*.jpg`) read as image-caption pairs, for FLYP (Goyal et al. 2022).

FLYP fine-tunes a classifier the way CLIP was pre-trained: each image is paired with a caption made from its
class name and a prompt template ("a photo of a {}."), and training is contrastive. The names and templates
are the ones zero-shot evaluation reads from the same root (`clip_train.eval.zeroshot`): `classnames.txt`
(one name per line, in sorted folder order) else the folder names with `_` read as spaces, and `templates.txt`
(one template per line, `{}` for the name) else "a photo of a {}.".

Each image keeps one template, chosen by a stable hash of its path, so the classes' captions spread over all
templates and a resumed run reads the same pairs. Rows are the images in sorted (class, file) order, read in
units (`data.kind=classes`, `clip_train.data.row_source`); the kind is named, never inferred (an ImageFolder of
classes looks like any folder of images).
"""

import functools
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

from clip_train.data.row_samples import MEMBERS
from clip_train.data.row_source import Row, RowSource

FALLBACK_TEMPLATE = "a photo of a {}."


def _lines(path: str) -> list[str]:
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


@functools.lru_cache(maxsize=4)
def class_folder(root: str) -> tuple[tuple[tuple[str, int], ...], tuple[str, ...], tuple[str, ...]]:
    """((relative image path, class index) in sorted order, class names, templates) of the ImageFolder `root`."""
    folders = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not folders:
        raise ValueError(f"data.kind=classes: {root} holds no class folder (ROOT/CLASS/*.jpg)")
    names_file, templates_file = os.path.join(root, "classnames.txt"), os.path.join(root, "templates.txt")
    names = _lines(names_file) if os.path.isfile(names_file) else [name.replace("_", " ") for name in folders]
    if len(names) != len(folders):
        raise ValueError(f"{names_file} names {len(names)} classes but {root} has {len(folders)} class folders")
    templates = _lines(templates_file) if os.path.isfile(templates_file) else [FALLBACK_TEMPLATE]
    unnamed = [template for template in templates if "{}" not in template]
    if unnamed:
        raise ValueError(f"{templates_file}: a template needs {{}} where the class name goes, not {unnamed[0]!r}")
    images = [
        (os.path.join(folder, file), label)
        for label, folder in enumerate(folders)
        for file in sorted(os.listdir(os.path.join(root, folder)))
        if os.path.splitext(file)[1].lower() in MEMBERS
    ]
    return tuple(images), tuple(names), tuple(templates)


def template_index(relative_path: str, templates: int) -> int:
    """The template of an image: a stable hash of its path (the same in every process and run) modulo `templates`."""
    return int.from_bytes(hashlib.sha1(relative_path.encode()).digest()[:8], "big") % templates


@dataclass(frozen=True)
class ClassFolder(RowSource):
    """An ImageFolder of classes (see the module docstring); one part, the root, keyed by relative path."""

    name = "classes"

    def parts(self, path: str) -> list[tuple[str, int]]:
        return [(path, len(class_folder(path)[0]))]

    def rows(self, part: str, start: int, stop: int) -> Iterator[Row]:
        """Images start..stop-1, each captioned by its class name in its template, keyed by relative path without
        extension."""
        images, names, templates = class_folder(part)
        for relative, label in images[start:stop]:
            caption = templates[template_index(relative, len(templates))].format(names[label])
            yield Row(os.path.splitext(relative)[0], caption, relative)
