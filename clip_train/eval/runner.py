"""Zero-shot and retrieval evaluation of a `ClipModel` on this rank's share of a set.

Used by `python -m clip_train.evaluate` and by the in-training `EvaluationCallback`. Every
rank reads and encodes its own slice of the images (zero-shot: every world-th image; retrieval:
every world-th shard) and the metric functions sum counts over ranks, so all ranks must call
these together and all get the same result.
"""

import io
import itertools
from collections.abc import Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info
from tqdm import tqdm

from clip_train.data.bad_data import BadSampleCounter
from clip_train.data.pipeline import decode_pair
from clip_train.data.shard_reader import shard_samples
from clip_train.distributed import all_reduce_sum
from clip_train.eval.retrieval import retrieval_metrics
from clip_train.eval.zeroshot import ZeroShotSet, accuracy, image_folder
from clip_train.inference import ClipModel
from clip_train.text_classifier import class_weights


class ImageFiles(Dataset):
    """Preprocessed images from paths; an unreadable file stops evaluation with its path named."""

    def __init__(self, paths: Sequence[str], preprocess):
        self.paths, self.preprocess = list(paths), preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        try:
            with Image.open(self.paths[index]) as image:
                return self.preprocess(image.convert("RGB"))
        except Exception as error:  # PIL raises many types for truncated or foreign data
            raise ValueError(f"cannot read the image {self.paths[index]} ({error.__class__.__name__}: {error})") from error


def pil_rgb(data: bytes) -> Image.Image:
    """Image bytes -> RGB PIL image, the input of a `ClipModel`'s preprocess (its users' path, not the loader's)."""
    return Image.open(io.BytesIO(data)).convert("RGB")


class CaptionedImages(IterableDataset):
    """(preprocessed image, [captions]) from tar shards, this worker's share of `urls`.

    multi_caption: the caption text holds one caption per line (COCO-style sets have about 5).
    """

    def __init__(self, urls: Sequence[str], preprocess, multi_caption: bool):
        self.urls, self.preprocess, self.multi_caption = list(urls), preprocess, multi_caption

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        counter = BadSampleCounter()  # bad samples are skipped and counted; a broken set aborts (data.max_bad_sample_rate)
        urls = ({"url": url} for url in self.urls[worker::workers])
        for sample in shard_samples(urls, counter):
            pair = decode_pair(sample, counter, pil_rgb)
            if pair is None:
                continue
            image, caption, _ = pair
            captions = [line.strip() for line in caption.splitlines() if line.strip()] if self.multi_caption else [caption]
            yield self.preprocess(image), captions


def _loader(dataset, batch_size: int, num_workers: int, collate_fn=None) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_fn)


@torch.no_grad()
def zeroshot_metrics(
    model: ClipModel,
    name: str,
    spec: ZeroShotSet,
    cache_dir: str,
    rank: int = 0,
    world: int = 1,
    batch_size: int = 128,
    num_workers: int = 0,
    progress: bool = False,
    images_per_class: int | None = None,
) -> dict:
    """{top1, top5, per_class} of `model` on the set, over all ranks (this rank encodes images rank::world).

    images_per_class: only the first N images of each class (a cheaper estimate); None for all.
    """
    root = spec.locate(cache_dir)
    paths, labels, names = image_folder(root, spec.classnames, images_per_class)
    weights = class_weights(model.encode_text, names, spec.resolved_templates(root))
    share = slice(rank, None, world)
    batches = _loader(ImageFiles(paths[share], model.preprocess), batch_size, num_workers)
    features = [
        model.model.encode_image(pixels.to(model.device)).float()
        for pixels in tqdm(batches, desc=f"zero-shot {name}", disable=not progress)
    ]
    features = torch.cat(features) if features else weights.new_zeros(0, weights.shape[1])
    labels = torch.tensor(labels[share], dtype=torch.long, device=model.device)  # long even when this share is empty
    return accuracy(features, labels, weights, names)


def _collate_captioned(batch: list[tuple[torch.Tensor, list[str]]]) -> tuple[torch.Tensor, list[list[str]]]:
    return torch.stack([pixels for pixels, _ in batch]), [captions for _, captions in batch]


@torch.no_grad()
def retrieval_on_shards(
    model: ClipModel,
    urls: Sequence[str],
    multi_caption: bool = False,
    rank: int = 0,
    world: int = 1,
    batch_size: int = 128,
    num_workers: int = 0,
    progress: bool = False,
) -> dict[str, float]:
    """Recall@1/5/10 both ways and the alignment gap (and InfoNCE `loss` for pairs), over all ranks.

    This rank reads the shards rank::world. With `multi_caption` every line of a sample's
    caption is one caption of its image, and an image query hits if any of them is retrieved.
    """
    share = list(urls)[rank::world]
    readers = max(1, min(num_workers, len(share)))
    dataset = CaptionedImages(share, model.preprocess, multi_caption)
    batches = _loader(dataset, batch_size, readers if num_workers else 0, _collate_captioned)
    image_features, text_features, owners = [], [], []
    seen = 0
    for pixels, captions in tqdm(batches, desc="retrieval", unit="batch", disable=not progress):
        image_features.append(model.model.encode_image(pixels.to(model.device)).float())
        flat = list(itertools.chain.from_iterable(captions))
        text_features.append(model.encode_text(flat))
        owners += [seen + i for i, group in enumerate(captions) for _ in group]
        seen += len(captions)
    empty = torch.zeros(0, model.model.embed_dim, device=model.device)
    images = torch.cat(image_features) if image_features else empty
    texts = torch.cat(text_features) if text_features else empty
    text_to_image = torch.tensor(owners, dtype=torch.long, device=model.device) if multi_caption else None
    if not all_reduce_sum(torch.tensor(seen, device=model.device)):
        raise ValueError(f"no readable image-caption sample in the retrieval shards {list(urls)[:3]}")
    return retrieval_metrics(images, texts, model.model.logit_scale.detach(), text_to_image=text_to_image)
