"""Zero-shot classification: class weights from prompt templates, accuracy on an ImageFolder.

A class's weight is the normalised mean of the text embeddings of its prompts
(`clip_train.text_classifier`); an image's class is the one with the highest cosine. Class
names come from a file (one per line, in the sorted folder order) or a JSON mapping {folder
name: class name}, else a `classnames.txt` in the root, else OpenAI's names for an ImageNet
layout (`clip_train.eval.imagenet`), else the folder names themselves. Templates likewise
default to the root's `templates.txt`, else OpenAI's 80 ImageNet prompts for an ImageNet layout,
else "default". Reports top-1, top-5 and the mean per-class recall (balanced accuracy, the metric
DataComp and CLIP_benchmark give for sets with unequal classes), plus top-1 per class.

Accuracy is computed from each rank's share of the images and summed over ranks.

`ZeroShotTask` is one such set as an evaluation task (`eval.tasks.zeroshot.<set>`); each rank encodes every
world-th image.
"""

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm import tqdm

from clip_train.distributed import all_reduce_sum
from clip_train.eval.imagenet import data_lines, imagenet_names
from clip_train.eval.readers import ImageFiles, loader
from clip_train.inference import ClipModel
from clip_train.text_classifier import DEFAULT_TEMPLATES, class_weights

GENERIC_TEMPLATES = (
    "a photo of a {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "a close-up photo of a {}.",
    "a cropped photo of a {}.",
    "a bright photo of a {}.",
    "a dark photo of a {}.",
    "a blurry photo of a {}.",
    "a drawing of a {}.",
    "a rendering of a {}.",
    "a small {}.",
    "a large {}.",
    "there is a {} in the picture.",
    "a {} in the scene.",
)
TEMPLATE_SETS = {
    "default": DEFAULT_TEMPLATES,
    "generic": GENERIC_TEMPLATES,
    "openai_imagenet": tuple(data_lines("openai_imagenet_templates.txt")),  # OpenAI's 80, ImageNet's default
    "simple_imagenet": tuple(data_lines("simple_imagenet_templates.txt")),  # the 7 OpenCLIP also ships
}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def resolve_templates(templates: str | Sequence[str]) -> tuple[str, ...]:
    """A built-in set name (`TEMPLATE_SETS`), a file of templates (one per line), or the templates; the class
    name goes where `{}` is, or `{c}` (CLIP_benchmark's files)."""
    if isinstance(templates, str):
        if templates in TEMPLATE_SETS:
            return TEMPLATE_SETS[templates]
        with open(templates) as f:
            templates = [line.strip() for line in f if line.strip()]
    templates = [template.replace("{c}", "{}") for template in templates]
    if not templates or not all("{}" in t for t in templates):
        raise ValueError(f"every template needs a '{{}}' for the class name: {templates!r}")
    return tuple(templates)


def image_folder(
    root: str, classnames: str | None = None, images_per_class: int | None = None
) -> tuple[list[str], list[int], list[str]]:
    """(image paths, class indices, class names) of an ImageFolder: one sub-folder per class,
    the first `images_per_class` (sorted by name) of each when given."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"zero-shot root {root!r} is not a folder")
    folders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not folders:
        raise ValueError(f"zero-shot root {root!r} has no class folders")
    names = imagenet_names(folders) or folders
    if classnames is None and os.path.isfile(os.path.join(root, "classnames.txt")):
        classnames = os.path.join(root, "classnames.txt")
    if classnames:
        with open(classnames) as f:
            text = f.read()
        if classnames.endswith(".json"):
            mapping = json.loads(text)
            absent = [d for d in folders if d not in mapping]
            if absent:
                raise ValueError(f"{classnames} names no class for the folders {absent[:5]}")
            names = [mapping[d] for d in folders]
        else:
            names = [line.strip() for line in text.splitlines() if line.strip()]
            if len(names) != len(folders):
                raise ValueError(f"{classnames} has {len(names)} class names but {root} has {len(folders)} class folders")
    paths, labels = [], []
    for label, folder in enumerate(folders):
        folder_path = os.path.join(root, folder)
        images = sorted(name for name in os.listdir(folder_path) if name.lower().endswith(IMAGE_EXTENSIONS))
        if not images:
            raise ValueError(f"zero-shot class folder {folder_path!r} holds no image ({', '.join(IMAGE_EXTENSIONS)})")
        images = images[:images_per_class]
        paths += [os.path.join(folder_path, name) for name in images]
        labels += [label] * len(images)
    return paths, labels, names


@torch.no_grad()
def accuracy(image_features: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, names: Sequence[str]) -> dict:
    """Top-1/top-5 accuracy and per-class top-1 over all ranks, from this rank's share.

    image_features: (N_r, D) unit-norm; labels: (N_r,) class indices; weights: (C, D), the same
    on every rank. Every rank must call this (N_r may be 0).
    """
    num_classes = weights.shape[0]
    top = (image_features.float() @ weights.float().T).topk(min(5, num_classes), dim=-1).indices
    hit1 = (top[:, 0] == labels).double()
    hit5 = (top == labels[:, None]).any(dim=-1).double()
    counts = torch.zeros(3, num_classes, dtype=torch.float64, device=image_features.device)
    counts[0].index_add_(0, labels, torch.ones_like(hit1))
    counts[1].index_add_(0, labels, hit1)
    counts[2].index_add_(0, labels, hit5)
    images, top1, top5 = all_reduce_sum(counts)
    total = float(images.sum())
    present = images > 0
    per_class = {name: float(top1[c] / images[c]) for c, name in enumerate(names) if present[c]}
    return {
        "top1": float(top1.sum()) / total,
        "top5": float(top5.sum()) / total,
        "mean_per_class_recall": float((top1[present] / images[present]).mean()),  # over the classes with images
        "per_class": per_class,
    }


@dataclass(frozen=True)
class ZeroShotTask:
    """One zero-shot set.

    root: the ImageFolder; when None, `synthetic` names a drawn set (`shapes`, `colours`) written
        on first use into `cache_dir`.
    classnames: a file of names (one per line, folder order) or a JSON {folder: name}; None: the
        root's `classnames.txt`, else OpenAI's names for ImageNet's folders, else the folder names.
    templates: a set of `clip_train.eval.zeroshot.TEMPLATE_SETS` (`default`, `generic`, `openai_imagenet`,
        `simple_imagenet`), a file of templates, or None for the root's own `templates.txt`, else
        `openai_imagenet` for ImageNet's classes, else `default`.
    images_per_class: only the first N images of each class (a cheaper estimate); None for all.
    batch_size, num_workers: the image loader's; progress: a progress bar on rank 0.
    """

    root: str | None = None
    synthetic: str | None = None
    classnames: str | None = None
    templates: str | None = None
    images_per_class: int | None = None
    cache_dir: str | None = None
    batch_size: int = 128
    num_workers: int = 0
    progress: bool = False

    def __post_init__(self):
        if self.root is None and self.synthetic is None:
            raise ValueError("a zero-shot set needs a root (an ImageFolder) or a synthetic set name (shapes, colours)")

    def locate(self) -> str:
        if self.root is not None:
            return self.root
        from clip_train.eval.synthetic_sets import write_class_folders

        return write_class_folders(self.synthetic, self.cache_dir)

    def resolved_templates(self, root: str) -> tuple[str, ...]:
        own = os.path.join(root, "templates.txt")
        if self.templates or os.path.isfile(own):
            return resolve_templates(self.templates or own)
        folders = [entry.name for entry in os.scandir(root) if entry.is_dir()]
        return resolve_templates("openai_imagenet" if imagenet_names(folders) else "default")

    @torch.no_grad()
    def run(self, model: ClipModel, rank: int, world: int) -> dict:
        """{top1, top5, per_class} of `model` on the set, over all ranks (this rank encodes images rank::world)."""
        root = self.locate()
        paths, labels, names = image_folder(root, self.classnames, self.images_per_class)
        weights = class_weights(model.encode_text, names, self.resolved_templates(root))
        share = slice(rank, None, world)
        batches = loader(ImageFiles(paths[share], model.preprocess_encoded), self.batch_size, self.num_workers)
        features = [
            model.encode_pixels(pixels)
            for pixels in tqdm(batches, desc=f"zero-shot {self.synthetic or root}", disable=not (self.progress and rank == 0))
        ]
        features = torch.cat(features) if features else weights.new_zeros(0, weights.shape[1])
        labels = torch.tensor(labels[share], dtype=torch.long, device=model.device)  # long even when this share is empty
        return accuracy(features, labels, weights, names)
