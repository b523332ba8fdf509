"""The streaming pipeline that runs inside each DataLoader worker.

    shard URLs (this rank's and this worker's share, or a seeded resampled stream)
      -> tar members grouped into samples (webdataset)
      -> decoded (PIL image, caption); broken or incomplete samples skipped and counted
      -> seeded shuffle buffer (training; drained at the end of each pass over the shards)
      -> image transform (seeded per batch), then batches tokenized in one call
      -> {image: (B, 3, H, W) float, input_ids: (B, L) long, attention_mask: (B, L) long,
          key: B sample keys, bad_samples: () long, the count of samples skipped since the previous batch}

Batches are built in the workers, so the main process only forwards ready tensors. Each
worker yields exactly `batches_per_worker` batches when it is set, which gives every rank the
same number of steps per epoch even on uneven shards (the shard stream wraps around). A resumed
run's workers skip the batches it already trained on (`clip_train.data.position`).
"""

import io
import itertools
import logging
import math
import random
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.sharedctypes import Synchronized

import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from clip_train.data.position import ResumePoint, seeded_torch, skip, stable_seed

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


class SampleCounter:
    """Counts one worker's decoded and dropped samples; `take()` returns the drops since the last call."""

    def __init__(self) -> None:
        self.decoded = 0
        self.total = 0
        self._reported = 0

    def skip(self, reason: str) -> None:
        self.total += 1
        if self.total <= 5 or math.log2(self.total).is_integer():
            log.warning("skipping bad sample #%d: %s", self.total, reason)

    def handle(self, error: Exception) -> bool:
        """webdataset exception handler: count, warn and carry on."""
        self.skip(f"{error.__class__.__name__}: {error}")
        return True

    def take(self) -> int:
        fresh, self._reported = self.total - self._reported, self.total
        return fresh


def decode_pair(sample: dict, counter: SampleCounter) -> tuple[Image.Image, str, str] | None:
    """(RGB image, caption, key) from a webdataset sample, or None (counted) if it is unusable."""
    where = f"{sample.get('__url__')}:{sample.get('__key__')}"
    image_bytes = next((sample[ext] for ext in IMAGE_EXTENSIONS if ext in sample), None)
    if image_bytes is None or "txt" not in sample:
        counter.skip(f"{where} lacks an image or a caption (has {sorted(k for k in sample if not k.startswith('__'))})")
        return None
    try:
        image = Image.open(io.BytesIO(image_bytes))
        image = image.convert("RGB")
        caption = sample["txt"].decode("utf-8").strip()
    except Exception as error:  # PIL raises many types for truncated or foreign data
        counter.skip(f"{where} does not decode: {error.__class__.__name__}: {error}")
        return None
    if not caption:
        counter.skip(f"{where} has an empty caption")
        return None
    counter.decoded += 1
    return image, caption, sample["__key__"]


class PairStream(IterableDataset):
    """Batches of image-text pairs from tar shards, for one rank; see the module docstring.

    rank, world: this process's place among the data-parallel ranks. They are given, not read
        from the environment, so the split is the one the trainer uses.
    resampled: draw shards with replacement, an endless stream seeded per rank, worker and epoch;
        otherwise every pass deals the (seeded, shuffled) shard list out rank by rank, then
        worker by worker.
    batches_per_worker: None for one exact pass (validation), else a fixed count (training).
    epoch: shared with the workers; the data module sets it before each epoch so persistent
        workers draw a new shard order.
    resume_point: where a resumed run left the stream (`clip_train.data.position`); the workers skip
        the batches it consumed, without transforming or tokenizing them.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        rank: int,
        world: int,
        batch_size: int,
        image_transform: Callable[[Image.Image], torch.Tensor],
        tokenize: Callable[[list[str]], dict[str, torch.Tensor]],
        seed: int,
        resampled: bool,
        shuffle_buffer: int,
        batches_per_worker: int | None,
        epoch: Synchronized,
        resume_point: ResumePoint | None = None,
    ):
        super().__init__()
        self.urls, self.rank, self.world = list(urls), rank, world
        self.batch_size, self.image_transform, self.tokenize = batch_size, image_transform, tokenize
        self.seed, self.resampled, self.shuffle_buffer = seed, resampled, shuffle_buffer
        self.batches_per_worker, self.epoch, self.resume_point = batches_per_worker, epoch, resume_point

    def _reader_urls(self, worker: int, workers: int, epoch: int) -> list[str]:
        """This rank's and this worker's share of the shards; in training, of a permutation seeded per epoch
        that is the same on every rank."""
        order = list(self.urls)
        if self.batches_per_worker is not None:
            random.Random(f"{self.seed}/shards/{epoch}").shuffle(order)
        return order[self.rank :: self.world][worker::workers]

    def _shard_passes(self, worker: int, workers: int, epoch: int) -> Iterator[Iterator[dict]]:
        """Passes over this reader's shards: one endless resampled pass, one exact pass (validation), or
        the same share again and again (training) until the epoch's batch count is met."""
        if self.resampled:
            rng = random.Random(f"{self.seed}/shards/{epoch}/{self.rank}/{worker}")
            yield ({"url": rng.choice(self.urls)} for _ in itertools.count())
            return
        mine = self._reader_urls(worker, workers, epoch)
        for _ in itertools.count() if self.batches_per_worker is not None else range(1):
            yield ({"url": url} for url in mine)

    def _pairs(self, worker: int, workers: int, epoch: int, counter: SampleCounter) -> Iterator:
        """Decoded (image, caption, key) pairs of this reader. Training shuffles within each pass, so without
        resampling an epoch that covers the shards once holds every sample exactly once."""
        rng = random.Random(f"{self.seed}/samples/{epoch}/{self.rank}/{worker}")
        training = self.batches_per_worker is not None
        for shards in self._shard_passes(worker, workers, epoch):
            decoded_before = counter.decoded
            samples = wds.tarfile_samples(shards, handler=counter.handle)
            pairs = (pair for sample in samples if (pair := decode_pair(sample, counter)) is not None)
            yield from self._shuffled(pairs, rng) if training and self.shuffle_buffer > 1 else pairs
            if training and counter.decoded == decoded_before:  # a reader wrapping round unreadable shards
                raise RuntimeError(f"no readable sample in any of these shards: {self._reader_urls(worker, workers, epoch)}")

    def _shuffled(self, pairs: Iterator, rng: random.Random) -> Iterator:
        buffer = []
        for pair in pairs:
            buffer.append(pair)
            if len(buffer) >= self.shuffle_buffer:
                index = rng.randrange(len(buffer))
                buffer[index], buffer[-1] = buffer[-1], buffer[index]
                yield buffer.pop()
        rng.shuffle(buffer)
        yield from buffer

    def _collate(self, pairs: list[tuple[Image.Image, str, str]], counter: SampleCounter, augment_seed: int) -> dict:
        with seeded_torch(augment_seed):  # one seed per batch: the draws differ between its images
            images = torch.stack([self.image_transform(image) for image, _, _ in pairs])
        tokens = self.tokenize([caption for _, caption, _ in pairs])
        keys = [key for _, _, key in pairs]
        return {"image": images, **tokens, "key": keys, "bad_samples": torch.tensor(counter.take())}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        slot, workers = (info.id, info.num_workers) if info else (0, 1)
        epoch = self.epoch.value
        worker, skipped = self.resume_point.plan(epoch, slot, workers) if self.resume_point else (slot, 0)
        counter = SampleCounter()
        training = self.batches_per_worker is not None
        groups = itertools.islice(self._groups(self._pairs(worker, workers, epoch, counter), training), self.batches_per_worker)
        skip(groups, skipped, counter.take)
        for index, group in enumerate(groups, start=skipped):
            yield self._collate(group, counter, stable_seed(self.seed, "augment", epoch, self.rank, worker, index))

    def _groups(self, pairs: Iterator, drop_last: bool) -> Iterator[list]:
        """Lists of `batch_size` pairs (the last one shorter unless `drop_last`)."""
        while group := list(itertools.islice(pairs, self.batch_size)):
            if len(group) < self.batch_size and drop_last:
                return
            yield group
