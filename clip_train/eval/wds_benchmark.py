"""A set in CLIP_benchmark's webdataset layout, read directly: the task type follows from its files.

The layout, as CLIP_benchmark's `webdataset_builder.convert_dataset` writes it and its
`datasets.builder.build_wds_dataset` reads it (LAION-AI/CLIP_benchmark), and as DataComp's
`download_evalsets.py` fetches its `wds_*` folders:

    ROOT/test/nshards.txt                            the number N of shards (required)
    ROOT/test/0.tar ... ROOT/test/{N-1}.tar          samples: an image (webp, png, jpg or jpeg) plus
                                                     `cls` (the class index, as text) or `txt` (captions,
                                                     one per line) for retrieval sets
    ROOT/classnames.txt                              one class name per line, in class-index order
    ROOT/zeroshot_classification_templates.txt       one prompt per line, `{c}` for the class name
    ROOT/dataset_type.txt                            `retrieval` for retrieval sets; absent: classification

A classification set is scored as `clip_train.eval.zeroshot` scores an ImageFolder (top1, top5,
mean_per_class_recall, per_class); a retrieval set as `clip_train.eval.retrieval` scores
multi-caption shards (image_to_text_R@k, text_to_image_R@k, ...). Both read every world-th shard
on each rank. An image that does not decode stops the evaluation, naming it: a benchmark number
over the images that happened to decode would not be the benchmark's.
"""

import os
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import IterableDataset, get_worker_info
from tqdm import tqdm

from clip_train.data.bad_data import BadSampleCounter
from clip_train.data.pipeline import IMAGE_EXTENSIONS
from clip_train.data.shard_reader import shard_samples
from clip_train.data.shards import expand_shards
from clip_train.eval.readers import loader
from clip_train.eval.retrieval import RetrievalTask
from clip_train.eval.zeroshot import accuracy, resolve_templates
from clip_train.inference import ClipModel
from clip_train.text_classifier import class_weights

KINDS = ("classification", "retrieval")


def is_benchmark_folder(root: str, split: str = "test") -> bool:
    """Whether `root` holds a set in CLIP_benchmark's webdataset layout (its `split/nshards.txt`)."""
    return os.path.isfile(os.path.join(root, split, "nshards.txt"))


def benchmark_kind(root: str) -> str:
    """`classification` or `retrieval`, from the folder's `dataset_type.txt` (absent: classification)."""
    path = os.path.join(root, "dataset_type.txt")
    kind = open(path).read().strip().lower() if os.path.isfile(path) else "classification"
    if kind not in KINDS:
        raise ValueError(f"{path} says {kind!r}: only {' and '.join(KINDS)} sets are read (not multilabel ones)")
    return kind


def benchmark_shards(root: str, split: str = "test") -> list[str]:
    """The split's shards `0.tar ... {N-1}.tar`, N from `nshards.txt`; a missing one fails here, named."""
    with open(os.path.join(root, split, "nshards.txt")) as f:
        count = int(f.read().strip())
    return expand_shards([os.path.join(root, split, f"{index}.tar") for index in range(count)], f"{root} ({split})")


def _lines(path: str) -> list[str]:
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


class LabelledImages(IterableDataset):
    """(pixels, class index) from this worker's share of `urls`; samples hold an image and a `cls` member."""

    def __init__(self, urls: Sequence[str], preprocess_encoded):
        self.urls, self.preprocess_encoded = list(urls), preprocess_encoded

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        counter = BadSampleCounter()  # a broken shard (not a tar, truncated) is reported as training reports it
        for sample in shard_samples(({"url": url} for url in self.urls[worker::workers]), counter):
            where = f"{sample['__url__']}:{sample['__key__']}"
            image = next((sample[ext] for ext in IMAGE_EXTENSIONS if ext in sample), None)
            if image is None or "cls" not in sample:
                members = sorted(key for key in sample if not key.startswith("__"))
                raise ValueError(f"{where} is no labelled image: it has {members}, not an image and a cls")
            try:
                pixels = self.preprocess_encoded(image)
            except Exception as error:  # PIL raises many types for damaged data
                raise ValueError(f"cannot read the image {where} ({error.__class__.__name__}: {error})") from error
            yield pixels, int(sample["cls"].decode().strip())


class BenchmarkFolderTask:
    """One folder in CLIP_benchmark's webdataset layout (`root`), classification or retrieval by its files.

    templates: for classification, a set of `clip_train.eval.zeroshot.TEMPLATE_SETS`, a file, or None for the
        folder's own `zeroshot_classification_templates.txt` (else `default`).
    batch_size, num_workers: the shard loader's; progress: a progress bar on rank 0.
    """

    def __init__(self, root: str, templates: str | None = None, batch_size: int = 128, num_workers: int = 0,
                 progress: bool = False):  # fmt: skip
        self.root, self.kind, self.urls = root, benchmark_kind(root), benchmark_shards(root)  # checked before any model loads
        self.templates = templates
        self.batch_size, self.num_workers, self.progress = batch_size, num_workers, progress

    def run(self, model: ClipModel, rank: int, world: int) -> dict:
        if self.kind == "retrieval":
            retrieval = RetrievalTask(self.urls, True, None, self.batch_size, self.num_workers, self.progress)
            return retrieval.run(model, rank, world)
        return self._classify(model, rank, world)

    @torch.no_grad()
    def _classify(self, model: ClipModel, rank: int, world: int) -> dict:
        names = _lines(os.path.join(self.root, "classnames.txt"))
        own = os.path.join(self.root, "zeroshot_classification_templates.txt")
        templates = resolve_templates(self.templates or (own if os.path.isfile(own) else "default"))
        weights = class_weights(model.encode_text, names, templates)
        share = self.urls[rank::world]
        readers = min(self.num_workers, len(share))
        batches = loader(LabelledImages(share, model.preprocess_encoded), self.batch_size, readers)
        features, labels = [weights.new_zeros(0, weights.shape[1])], [torch.zeros(0, dtype=torch.long)]
        for pixels, batch_labels in tqdm(batches, desc=self.root, disable=not (self.progress and rank == 0)):
            features.append(model.encode_pixels(pixels))
            labels.append(batch_labels)
        labels = torch.cat(labels).to(model.device)
        if labels.numel() and int(labels.max()) >= len(names):
            raise ValueError(f"{self.root}: class index {int(labels.max())} but classnames.txt names {len(names)} classes")
        return accuracy(torch.cat(features), labels, weights, names)
