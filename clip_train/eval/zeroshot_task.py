"""Zero-shot classification of an ImageFolder as an evaluation task (`eval.tasks.zeroshot.<set>`).

Reports `top1`, `top5`, `mean_per_class_recall` and `per_class` ({class name: top-1}); the prompt ensembles, class weights
and counts summed over ranks are `clip_train.eval.zeroshot`'s. Each rank encodes every world-th
image.
"""

import os
from dataclasses import dataclass

import torch
from tqdm import tqdm

from clip_train.eval.imagenet import imagenet_names
from clip_train.eval.readers import ImageFiles, loader
from clip_train.eval.zeroshot import accuracy, image_folder, resolve_templates
from clip_train.inference import ClipModel
from clip_train.text_classifier import class_weights


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
            model.model.encode_image(pixels.to(model.device)).float()
            for pixels in tqdm(batches, desc=f"zero-shot {self.synthetic or root}", disable=not (self.progress and rank == 0))
        ]
        features = torch.cat(features) if features else weights.new_zeros(0, weights.shape[1])
        labels = torch.tensor(labels[share], dtype=torch.long, device=model.device)  # long even when this share is empty
        return accuracy(features, labels, weights, names)
