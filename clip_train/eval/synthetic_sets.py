"""Zero-shot test sets drawn like the embedded training scenes: one class folder per shape or colour.

`shapes` holds single objects of a random colour, size, place and background, labelled by
shape; `colours` the same, labelled by colour. Each set ships its prompt templates: a
`shapes` prompt names the class with each colour ("a red {}"), a `colours` prompt with each
shape ("a {} circle"), so classifying one attribute averages over the other, as CLIP's
prompt ensembles do. The default run beats chance on colours by far (0.90 against 1/8); shapes
stay near chance (1/5), because colour, place, count and size already tell a batch's captions
apart, so the contrastive loss never needs shape. Images never coincide with training ones
(their own random stream).

`looks` is the 48-class set fine-tuning is measured on (docs/fine-tuning/flyp.md): a class is a size, a
colour and a background ("large red shape on a black background", 2 × 8 × 3), the shape random. Its
`train/` and `test/` splits (`write_class_splits`) draw from disjoint streams; each split holds its
`classnames.txt` and `templates.txt`, which zero-shot evaluation and FLYP's `data.kind=classes` both read.
"""

import os
import random

from clip_train.cache_folder import write_folder_once
from clip_train.data.world.scenes import BACKGROUNDS, COLORS, REGIONS, SHAPES, SIZES, ObjectGroup, Scene, render_scene

GENERATOR_VERSION = 1
KINDS = ("shapes", "colours", "looks")
LOOKS_TEMPLATES = ("a {}", "a picture of a {}", "{}")


def _scene(kind: str, label: str, rng: random.Random) -> Scene:
    if kind == "looks":
        size, color, background = label.split("_")
        return Scene(background, (ObjectGroup(color, rng.choice(SHAPES), size, 1, rng.choice(list(REGIONS))),))
    color = label if kind == "colours" else rng.choice(list(COLORS))
    shape = label if kind == "shapes" else rng.choice(SHAPES)
    group = ObjectGroup(color, shape, rng.choice(list(SIZES)), 1, rng.choice(list(REGIONS)))
    return Scene(rng.choice(list(BACKGROUNDS)), (group,))


def _classes_and_templates(kind: str) -> tuple[list[str], list[str]]:
    """(class folder names, prompt templates) of a set; `looks` folders are SIZE_COLOUR_BACKGROUND."""
    if kind == "shapes":
        return list(SHAPES), [f"a {color} {{}}" for color in COLORS]
    if kind == "looks":
        looks = [f"{size}_{color}_{background}" for size in SIZES for color in COLORS for background in BACKGROUNDS]
        return looks, list(LOOKS_TEMPLATES)
    return list(COLORS), [f"a {{}} {shape}" for shape in SHAPES]


def _class_name(kind: str, folder: str) -> str:
    if kind == "looks":
        size, color, background = folder.split("_")
        return f"{size} {color} shape on a {background} background"
    return folder


def write_class_folders(
    kind: str, cache_dir: str, per_class: int = 40, image_size: int = 64, seed: int = 0, split: str = ""
) -> str:
    """The ImageFolder of `kind` under `cache_dir`, written on first use; returns its root.

    The root holds one folder per class of `per_class` PNG images, a `templates.txt` and a `classnames.txt`.
    `split` (e.g. "train", "test") names a stream of its own, so splits share no image.
    Written to a temporary folder and renamed into place, so concurrent ranks are safe.
    """
    if kind not in KINDS:
        raise ValueError(f"no synthetic zero-shot set {kind!r}; there are {', '.join(KINDS)}")
    stream = f"{kind}-{split}" if split else kind
    name = f"zeroshot-{stream}-v{GENERATOR_VERSION}-seed{seed}-n{per_class}-px{image_size}"

    def write_classes(staging: str) -> None:
        classes, templates = _classes_and_templates(kind)
        for label in classes:
            os.makedirs(os.path.join(staging, label))
            for index in range(per_class):
                rng = random.Random(f"zeroshot/{stream}/{seed}/{label}/{index}")
                image = render_scene(_scene(kind, label, rng), image_size, rng)
                image.save(os.path.join(staging, label, f"{index:05d}.png"))
        with open(os.path.join(staging, "templates.txt"), "w") as f:
            f.write("\n".join(templates) + "\n")
        with open(os.path.join(staging, "classnames.txt"), "w") as f:
            f.write("\n".join(_class_name(kind, label) for label in sorted(classes)) + "\n")  # folder order

    return write_folder_once(os.path.join(cache_dir, name), write_classes)


def write_class_splits(kind: str, folder: str, train_per_class: int, test_per_class: int, seed: int = 0) -> str:
    """`folder`/train and `folder`/test, the set's two splits (ImageFolders from disjoint streams, written once
    into `folder`/.cache and linked); returns `folder`, the layout of `eval.tasks.linear_probe.root`."""
    os.makedirs(folder, exist_ok=True)
    cache = os.path.join(folder, ".cache")
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        link = os.path.join(folder, split)
        if not os.path.exists(link):
            os.symlink(write_class_folders(kind, cache, per_class, seed=seed, split=split), link)
    return folder
