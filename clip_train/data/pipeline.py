"""The streaming pipeline that runs inside each DataLoader worker.

    units (tar shards, or rows of a table, folder or Hugging Face dataset: `clip_train.data.source_kinds`; this
           reader's range of the epoch's samples, its whole units if sizes are unknown, or a seeded resampled stream)
      -> samples (tar members grouped by `shard_reader`, rows by their source; empty, truncated, unreadable units counted)
      -> decoded ((3, h, w) uint8 image, caption; `clip_train.data.image_decode`, a JPEG reduced on decode as far
         as the crop allows); broken or incomplete samples skipped and counted by kind. While a resumed worker
         skips the batches it delivered before, only image headers are read, and the images that reach a
         yielded batch are decoded just before batching (`clip_train.data.deferred_decode`)
      -> seeded shuffle buffer (training; drained at the end of each pass: the range, or a chunk after it)
      -> optionally, caption-word neighbours coupled into the same batch (training, within each pass;
         `clip_train.data.neighbour_batches`)
      -> image crop on uint8 (seeded per batch), then batches tokenized in one call
      -> {image: (B, 3, H, W) uint8, input_ids: (B, L) long, attention_mask: (B, L) long,
          key: B sample keys, bad_samples: (K,) long, the items skipped since the previous batch, per kind
          in `clip_train.data.bad_data.BAD_KINDS` order}
         and, with text hard negatives (training), negative_input_ids and negative_attention_mask (B, k, L),
         negative_valid (B, k) bool (`clip_train.data.negative_batch`)

Batches are built in the workers, so the main process only forwards ready tensors; the images are
normalised to float on the device, after the transfer (`clip_train.data.device_normalize`). In training a
rank yields exactly `batches_per_rank` batches, dealt round-robin over its workers, which gives every
rank the same number of steps per epoch even on uneven shards. Without resampling and with the shard
sizes known, each worker reads its own range of the epoch's samples (`clip_train.data.reader_shares`),
so an epoch of as many samples as the data holds (a multiple of the global batch) reads every sample
exactly once; with sizes unknown, workers take whole shards in turn and wrap round them. A resumed
run's workers skip the batches it already trained on (`clip_train.data.position`).
"""

import functools
import itertools
import math
import random
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.sharedctypes import Synchronized
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from clip_train.data.bad_data import BadDataPolicy, BadSampleCounter
from clip_train.data.deferred_decode import Deferral, Undecoded, decoded_pairs, image_or_none
from clip_train.data.image_decode import decode_rgb
from clip_train.data.negative_batch import NegativeCaptions
from clip_train.data.neighbour_batches import neighbour_batches
from clip_train.data.position import ResumePoint, seeded_torch, skip, stable_seed
from clip_train.data.reader_shares import ReaderShare, ShardSlice, shard_order, slices, worker_batches
from clip_train.data.source_kinds import is_row_unit, unit_samples

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def decode_pair(
    sample: dict, counter: BadSampleCounter, decode_image: Callable[[bytes], Any] = decode_rgb, defer: bool = False
) -> tuple | None:
    """(image, caption, key) from a webdataset sample, or None (counted by kind) if it is unusable.

    decode_image: image bytes -> image, raising PIL's errors (`PIL.UnidentifiedImageError` for no image); by
        default the (3, H, W) uint8 RGB tensor of `clip_train.data.image_decode`.
    defer: read only the image's header and keep its bytes, `Undecoded`, for a batch that may be skipped
        (`clip_train.data.deferred_decode`).
    """
    url, where = sample["__url__"], f"{sample['__url__']}:{sample['__key__']}"
    image_bytes = next((sample[ext] for ext in IMAGE_EXTENSIONS if ext in sample), None)
    members = sorted(k for k in sample if not k.startswith("__"))
    if "__unreadable__" in sample:  # a row source's row that could not be read
        counter.skip("unreadable_row", url, f"{where}: {sample['__unreadable__']}")
        return None
    if image_bytes is None:
        why = sample.get("__missing__") or f"has {members}"  # a row source says why it has none
        counter.skip("missing_image", url, f"{where} has no image ({why})")
        return None
    if "txt" not in sample:
        counter.skip("missing_caption", url, f"{where} has no caption (has {members})")
        return None
    if not image_bytes or (not sample["txt"] and not is_row_unit(url)):  # a row's empty cell is an empty caption
        counter.skip("empty_file", url, f"{where} has a zero-byte {'image' if not image_bytes else 'caption'}")
        return None
    try:
        caption = sample["txt"].decode("utf-8").strip()
    except UnicodeDecodeError as error:
        counter.skip("caption_not_utf8", url, f"{where}: {error}")
        return None
    if not caption:
        counter.skip("empty_caption", url, f"{where} has a blank caption")
        return None
    decode = functools.partial(Undecoded.checked, url=url, where=where) if defer else decode_image
    image = image_or_none(decode, image_bytes, url, where, counter)
    if image is None:
        return None
    counter.decoded += 1
    return image, caption, sample["__key__"]


def slice_samples(piece: ShardSlice, counter: BadSampleCounter) -> Iterator[dict]:
    """The samples of one shard slice; the shard is read from its start, and closed once the slice is out."""
    samples = unit_samples(iter([{"url": piece.url}]), counter)
    try:
        yield from itertools.islice(samples, piece.skip, piece.skip + piece.take)
    finally:
        samples.close()


def shuffled(items: Iterator, rng: random.Random, size: int) -> Iterator:
    """`items` through a seeded shuffle buffer of `size` (1: in order); what is left shuffled at the end."""
    buffer = []
    for item in items:
        buffer.append(item)
        if len(buffer) >= size:
            index = rng.randrange(len(buffer))
            buffer[index], buffer[-1] = buffer[-1], buffer[index]
            yield buffer.pop()
    rng.shuffle(buffer)
    yield from buffer


class PairStream(IterableDataset):
    """Batches of image-text pairs from tar shards, for one rank; see the module docstring.

    rank, world: this process's place among the data-parallel ranks. They are given, not read
        from the environment, so the split is the one the trainer uses.
    resampled: draw shards with replacement, an endless stream seeded per rank, worker and epoch;
        otherwise every epoch reads the (seeded, shuffled) shards once: by sample ranges when
        `shard_sizes` is given, else shard by shard, dealt out rank by rank, then worker by worker.
    batches_per_rank: None for one exact pass (validation), else the fixed count of training batches
        this rank yields per epoch; worker w of W yields `len(range(w, batches_per_rank, W))` of them.
    shard_sizes: samples in each of `urls` (None: unknown), for the exact split of non-resampled training.
    epoch: shared with the workers; the data module sets it before each epoch so persistent
        workers draw a new shard order.
    bad_data: how much bad data a worker tolerates before it stops the run (`clip_train.data.bad_data`).
    shard_weights: with resampling, each URL's draw weight (mixes sources, `clip_train.data.sources`);
        None draws every URL alike.
    resume_point: where a resumed run left the stream (`clip_train.data.position`); the workers skip
        the batches it consumed, without decoding, transforming or tokenizing them.
    negatives: makes k text hard negatives per caption of each training batch; None for none.
    neighbour_share, neighbour_pool: the share of each training batch filled with couples of caption-word
        neighbours, found among `neighbour_pool` waiting pairs (`clip_train.data.neighbour_batches`); 0: none.
    image_transform: (3, h, w) uint8 -> (3, H, W) uint8, the crop (`clip_train.data.transforms`).
    decode_image: image bytes -> (3, h, w) uint8 (`clip_train.data.image_decode`; the data module passes the
        smallest size the crop allows).
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        rank: int,
        world: int,
        batch_size: int,
        image_transform: Callable[[torch.Tensor], torch.Tensor],
        tokenize: Callable[[list[str]], dict[str, torch.Tensor]],
        seed: int,
        resampled: bool,
        shuffle_buffer: int,
        batches_per_rank: int | None,
        epoch: Synchronized,
        shard_sizes: Sequence[int] | None = None,
        bad_data: BadDataPolicy | None = None,
        shard_weights: Sequence[float] | None = None,
        resume_point: ResumePoint | None = None,
        negatives: NegativeCaptions | None = None,
        neighbour_share: float = 0.0,
        neighbour_pool: int = 1000,
        decode_image: Callable[[bytes], torch.Tensor] = decode_rgb,
    ):
        super().__init__()
        self.urls, self.rank, self.world = list(urls), rank, world
        self.batch_size, self.image_transform, self.tokenize = batch_size, image_transform, tokenize
        self.seed, self.resampled, self.shuffle_buffer = seed, resampled, shuffle_buffer
        self.batches_per_rank, self.epoch, self.resume_point = batches_per_rank, epoch, resume_point
        self.shard_sizes = list(shard_sizes) if shard_sizes is not None else None
        self.bad_data = bad_data or BadDataPolicy()
        self.cumulative_weights = list(itertools.accumulate(shard_weights)) if shard_weights else None
        self.negatives, self.neighbour_share, self.neighbour_pool = negatives, neighbour_share, neighbour_pool
        self.decode_image = decode_image

    @property
    def training(self) -> bool:
        return self.batches_per_rank is not None

    def _reader_urls(self, worker: int, workers: int, epoch: int) -> list[str]:
        """This rank's and this worker's share of whole shards; in training, of the epoch's shard order."""
        order = [self.urls[i] for i in shard_order(len(self.urls), self.seed, epoch)] if self.training else self.urls
        return order[self.rank :: self.world][worker::workers]

    def _passes(self, worker: int, workers: int, epoch: int, counter: BadSampleCounter) -> tuple[Iterator[Iterator[dict]], int]:
        """Passes over this reader's samples, each shuffled on its own in training, and how many passes in a row
        without a readable sample prove there is none: one endless resampled pass, one exact pass (validation),
        the reader's range of the epoch and the chunks after it (sizes known), or its whole shards again and
        again (sizes unknown)."""
        if self.resampled:
            rng = random.Random(f"{self.seed}/shards/{epoch}/{self.rank}/{worker}")
            weights = self.cumulative_weights
            urls = (
                rng.choices(self.urls, cum_weights=weights)[0] if weights else rng.choice(self.urls) for _ in itertools.count()
            )
            return iter([unit_samples(({"url": url} for url in urls), counter)]), 1
        if self.training and self.shard_sizes is not None:
            return self._range_passes(worker, workers, epoch, counter)
        mine = self._reader_urls(worker, workers, epoch)
        passes = itertools.count() if self.training else range(1)
        return (unit_samples(({"url": url} for url in mine), counter) for _ in passes), 1

    def _range_passes(self, worker: int, workers: int, epoch: int, counter: BadSampleCounter) -> tuple[Iterator, int]:
        """This reader's range of the epoch's samples, then the range-sized chunks after it (`reader_shares`)."""
        if sum(self.shard_sizes) == 0:
            raise RuntimeError(f"no readable sample in any of these shards (they hold none): {self.urls}")
        order = shard_order(len(self.urls), self.seed, epoch)
        urls, sizes = [self.urls[i] for i in order], [self.shard_sizes[i] for i in order]
        share = ReaderShare.of(self.rank, worker, workers, self.batches_per_rank, self.batch_size)
        passes = (
            (sample for piece in slices(urls, sizes, start, length) for sample in slice_samples(piece, counter))
            for start, length in share.chunks()
        )
        return passes, math.ceil(sum(sizes) / max(share.length, 1))  # that many chunks cover every sample

    def _pairs(self, worker: int, workers: int, epoch: int, counter: BadSampleCounter) -> Iterator:
        """(image, caption, key) pairs of this reader. In training the image stays encoded (`Undecoded`: its header
        read, its bytes kept) through the shuffle buffer and the neighbour pool, which then hold bytes, not pixels
        (about 10x less at 256 px: `scripts/benchmark_shuffle_memory.py`); `decoded_pairs` decodes it at the
        end. Training shuffles within each pass, so a pass over a range of samples yields each of them once."""
        rng = random.Random(f"{self.seed}/samples/{epoch}/{self.rank}/{worker}")
        passes, dry_limit = self._passes(worker, workers, epoch, counter)
        dry = 0
        for samples in passes:
            decoded_before = counter.decoded
            pairs = (
                pair
                for sample in samples
                if (pair := decode_pair(sample, counter, self.decode_image, defer=self.training)) is not None
            )
            if self.training and self.shuffle_buffer > 1:
                pairs = shuffled(pairs, rng, self.shuffle_buffer)
            if self.training and self.neighbour_share > 0:
                pairs = neighbour_batches(pairs, self.batch_size, self.neighbour_share, self.neighbour_pool)
            yield from pairs
            dry = dry + 1 if counter.decoded == decoded_before else 0
            if self.training and dry >= dry_limit:  # a reader going round unreadable shards
                shards = self.urls if self.shard_sizes is not None else self._reader_urls(worker, workers, epoch)
                raise RuntimeError(f"no readable sample in any of these shards: {shards}")

    def _collate(self, pairs: list[tuple[torch.Tensor, str, str]], counter: BadSampleCounter, augment_seed: int) -> dict:
        with seeded_torch(augment_seed):  # one seed per batch: the draws differ between its images
            images = torch.stack([self.image_transform(image) for image, _, _ in pairs])
        captions = [caption for _, caption, _ in pairs]
        negatives = self.negatives(captions, augment_seed) if self.negatives and self.training else {}
        keys = [key for _, _, key in pairs]
        return {"image": images, **self.tokenize(captions), **negatives, "key": keys, "bad_samples": counter.take()}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        slot, workers = (info.id, info.num_workers) if info else (0, 1)
        epoch = self.epoch.value
        worker, skipped = self.resume_point.plan(epoch, slot, workers) if self.resume_point else (slot, 0)
        counter = BadSampleCounter(self.bad_data)
        quota = worker_batches(self.batches_per_rank, worker, workers) if self.training else None
        deferral = Deferral(active=skipped > 0)  # skipped batches are never decoded
        pairs = decoded_pairs(self._pairs(worker, workers, epoch, counter), self.decode_image, counter, deferral)
        groups = itertools.islice(self._groups(pairs, self.training), quota)
        skip(groups, skipped, counter.take)
        deferral.active = False
        for index, group in enumerate(groups, start=skipped):
            yield self._collate(group, counter, stable_seed(self.seed, "augment", epoch, self.rank, worker, index))

    def _groups(self, pairs: Iterator, drop_last: bool) -> Iterator[list]:
        """Lists of `batch_size` pairs (the last one shorter unless `drop_last`)."""
        while group := list(itertools.islice(pairs, self.batch_size)):
            if len(group) < self.batch_size and drop_last:
                return
            yield group
