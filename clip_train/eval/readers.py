"""A rank's share of an evaluation set, read from disk: ImageFolder images and captioned shards.

The evaluation tasks (`clip_train.eval.tasks`) read their sets through these: images of a
zero-shot set by path, image-caption pairs from tar shards (this rank's shards, split again
between the DataLoader's workers), and the image and caption embeddings of such shards.
"""

import io
import itertools
from collections.abc import Sequence
from typing import NamedTuple

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info
from tqdm import tqdm

from clip_train.data.bad_data import BadSampleCounter
from clip_train.data.pipeline import decode_pair
from clip_train.data.shards import expand_shards
from clip_train.data.source_kinds import unit_samples
from clip_train.data.world.synthetic import SyntheticShards
from clip_train.distributed import all_reduce_sum
from clip_train.inference import ClipModel


class ImageFiles(Dataset):
    """Preprocessed images from paths; an unreadable file stops evaluation with its path named.

    preprocess_encoded: a file's bytes -> pixels (`ClipModel.preprocess_encoded`, validation's preprocessing).
    """

    def __init__(self, paths: Sequence[str], preprocess_encoded):
        self.paths, self.preprocess_encoded = list(paths), preprocess_encoded

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        try:
            with open(self.paths[index], "rb") as f:
                return self.preprocess_encoded(f.read())
        except Exception as error:  # PIL raises many types for truncated or foreign data
            raise ValueError(f"cannot read the image {self.paths[index]} ({error.__class__.__name__}: {error})") from error


def pil_rgb(data: bytes) -> Image.Image:
    """Image bytes -> RGB PIL image, for a task that hands images to `ClipModel.encode_image` (compositional)."""
    return Image.open(io.BytesIO(data)).convert("RGB")


class CaptionedImages(IterableDataset):
    """(preprocessed image, [captions]) from tar shards, this worker's share of `urls`.

    preprocess_encoded: image bytes -> pixels (`ClipModel.preprocess_encoded`, validation's preprocessing); what
        it raises counts the sample as bad, as the training loader counts it.
    multi_caption: the caption text holds one caption per line (COCO-style sets have about 5).
    """

    def __init__(self, urls: Sequence[str], preprocess_encoded, multi_caption: bool):
        self.urls, self.preprocess_encoded, self.multi_caption = list(urls), preprocess_encoded, multi_caption

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        counter = BadSampleCounter()  # bad samples are skipped and counted; a broken set aborts (data.max_bad_sample_rate)
        urls = ({"url": url} for url in self.urls[worker::workers])
        for sample in unit_samples(urls, counter):
            pair = decode_pair(sample, counter, self.preprocess_encoded)
            if pair is None:
                continue
            image, caption, _ = pair
            captions = [line.strip() for line in caption.splitlines() if line.strip()] if self.multi_caption else [caption]
            yield image, captions


def loader(dataset, batch_size: int, num_workers: int, collate_fn=None) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_fn)


def _collate_captioned(batch: list[tuple[torch.Tensor, list[str]]]) -> tuple[torch.Tensor, list[list[str]]]:
    return torch.stack([pixels for pixels, _ in batch]), [captions for _, captions in batch]


class ShardEmbeddings(NamedTuple):
    """This rank's share of a set of shards, embedded: N images with M >= N captions.

    images: (N, D) and texts: (M, D), float32 and unit-norm; owners: (M,) long, the image of each caption.
    """

    images: torch.Tensor
    texts: torch.Tensor
    owners: torch.Tensor


@torch.no_grad()
def embed_shards(
    model: ClipModel,
    urls: Sequence[str],
    multi_caption: bool,
    rank: int,
    world: int,
    batch_size: int,
    num_workers: int,
    progress: bool,
) -> ShardEmbeddings:
    """Embeddings of the shards rank::world of `urls`. Every rank must call this: a set in which no rank
    read a sample raises ValueError on all of them."""
    share = list(urls)[rank::world]
    readers = max(1, min(num_workers, len(share)))
    dataset = CaptionedImages(share, model.preprocess_encoded, multi_caption)
    batches = loader(dataset, batch_size, readers if num_workers else 0, _collate_captioned)
    image_features, text_features, owners = [], [], []
    seen = 0
    for pixels, captions in tqdm(batches, desc="shards", unit="batch", disable=not (progress and rank == 0)):
        image_features.append(model.encode_pixels(pixels))
        text_features.append(model.encode_text(list(itertools.chain.from_iterable(captions))))
        owners += [seen + i for i, group in enumerate(captions) for _ in group]
        seen += len(captions)
    if not all_reduce_sum(torch.tensor(seen, device=model.device)):
        raise ValueError(f"no readable image-caption sample in the shards {list(urls)[:3]}")
    empty = torch.zeros(0, model.embed_dim, device=model.device)
    return ShardEmbeddings(
        torch.cat(image_features) if image_features else empty,
        torch.cat(text_features) if text_features else empty,
        torch.tensor(owners, dtype=torch.long, device=model.device),
    )


def embedded_validation_urls(cache_dir: str) -> list[str]:
    """The shards of the embedded synthetic validation split (`SyntheticShards()`), written on first use."""
    return expand_shards(SyntheticShards().write(cache_dir)[1], "the embedded validation split")
