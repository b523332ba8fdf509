"""Which samples each reader (a rank's DataLoader worker) reads in a non-resampled training epoch.

An epoch lays the shards out in a seeded order, the same on every rank and new each epoch, and
numbers their samples 0..N-1 in that order (N from the shard sizes). Each rank takes P batches
(`batches_per_epoch`), which its W workers deal out round-robin: worker w yields
`len(range(w, P, W))` of them (the first P mod W workers one more), as the DataLoader takes
batch i from worker i mod W. Reader (rank r, worker w) reads the next `batches × B` positions after
those of the readers before it, in the order (rank 0: worker 0, 1, ...; rank 1: ...), so the
world × P × B positions of an epoch split into contiguous, disjoint ranges that may start and end
mid-shard. Positions past N wrap round to 0: with world × P × B = N every sample is read exactly once.

A reader whose range yields fewer pairs than its batches need (bad samples skipped, a shard that
vanished) reads on into the following ranges, range-sized chunk by chunk, repeating samples of
other readers. Everything here is a function of the seed, epoch, layout and shard sizes, so a
resumed run replays the same ranges (`clip_train.data.position`).
"""

import bisect
import itertools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ShardSlice:
    """Samples [skip, skip + take) of one shard, in file order."""

    url: str
    skip: int
    take: int


def worker_batches(batches_per_rank: int, worker: int, workers: int) -> int:
    """Batches worker `worker` of `workers` yields when the DataLoader takes them round-robin."""
    return len(range(worker, batches_per_rank, workers))


def shard_order(shards: int, seed: int, epoch: int) -> list[int]:
    """Shard indices in the epoch's seeded order, the same on every rank."""
    order = list(range(shards))
    random.Random(f"{seed}/shards/{epoch}").shuffle(order)
    return order


@dataclass(frozen=True)
class ReaderShare:
    """One reader's range of an epoch's sample positions: `length` positions from `start`."""

    start: int
    length: int

    @classmethod
    def of(cls, rank: int, worker: int, workers: int, batches_per_rank: int, batch_size: int) -> "ReaderShare":
        before = rank * batches_per_rank + sum(worker_batches(batches_per_rank, w, workers) for w in range(worker))
        return cls(before * batch_size, worker_batches(batches_per_rank, worker, workers) * batch_size)

    def chunks(self) -> Iterator[tuple[int, int]]:
        """(start, length) of the reader's own range, then of the range-sized chunks after it, endlessly."""
        size = max(self.length, 1)
        return ((self.start + index * size, size) for index in itertools.count())


def slices(urls: Sequence[str], sizes: Sequence[int], start: int, length: int) -> list[ShardSlice]:
    """The shard slices that hold positions [start, start + length) of the samples of `urls` (sizes: their
    sample counts) laid end to end in this order, wrapping round after the last."""
    total = sum(sizes)
    if total == 0:
        raise ValueError("the shards hold no sample")
    ends = list(itertools.accumulate(sizes))
    pieces, position = [], start % total
    while length > 0:
        index = bisect.bisect_right(ends, position)  # the shard holding `position`; empty shards are passed over
        take = min(ends[index] - position, length)
        pieces.append(ShardSlice(urls[index], position - (ends[index] - sizes[index]), take))
        length, position = length - take, (position + take) % total
    return pieces


def coverage_problem(data_samples: int | None, batches_per_rank: int, world: int, batch_size: int) -> str | None:
    """Why an epoch cannot read each of the `data_samples` training samples exactly once (None: unknown
    sizes), or None when it does: it reads world × batches × batch size positions, wrapping round past N."""
    places = world * batches_per_rank * batch_size
    layout = f"{batches_per_rank} batches × {world} ranks × {batch_size} = {places} samples per epoch"
    if data_samples is None:
        return (
            f"the training shards' sizes are unknown (remote shards), so readers take whole shards in turn and wrap "
            f"round their own: an unknown number of samples repeat or are skipped per epoch ({layout}). Exactly once "
            "per epoch needs every shard's size (local shards, or sizes.json / *_stats.json beside them)"
        )
    if places > data_samples:
        return (
            f"{places - data_samples} samples repeat per epoch: {layout} for {data_samples} samples in the shards. "
            "Exactly once needs data.samples_per_epoch unset and the data size a multiple of the global batch"
        )
    if places < data_samples:
        return (
            f"{data_samples - places} samples are skipped per epoch (other ones each epoch): {layout} for "
            f"{data_samples} samples in the shards"
        )
    return None
