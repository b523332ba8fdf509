"""Where the training stream stands, so a resumed run continues it exactly.

Every rank consumes one batch per training step and every worker yields a fixed number of
batches per epoch (worker w of W yields `len(range(w, P, W))` of a rank's P), so one number says
how far a rank is into the current epoch's deterministic stream: the batches its training loop
has consumed. DataLoader workers hand out batches round-robin (batch i comes from worker i mod W;
a worker that is done drops out, which with these counts keeps that order), so after n batches
worker w has delivered `len(range(w, n, W))` of them; batches a worker made but the main process has not
consumed yet (prefetched) are not counted, and are made again after a resume.

A resume with n mod W = s ≠ 0 would start the round-robin at worker 0, not at worker s. So
for the resumed epoch the DataLoader's worker slot j plays the part of logical worker
(j + s) mod W: its shards, seeds and skipped batches are those of the logical worker, and the
batches come out in the uninterrupted run's order.

Augmentation draws are seeded per batch from (seed, epoch, rank, logical worker, batch index),
so the same batch gets the same crops whether or not the run was interrupted, whatever the
DataLoader's worker seeds (which differ after a restart).
"""

import hashlib
import logging
import multiprocessing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from lightning.pytorch.trainer.states import TrainerFn

log = logging.getLogger(__name__)


def stable_seed(*parts) -> int:
    """A 63-bit seed from `parts`, the same in every process and Python run (unlike `hash`)."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@contextmanager
def seeded_torch(seed: int) -> Iterator[None]:
    """Inside, torch's global CPU generator starts from `seed`; outside, the caller's random state is kept."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@dataclass(frozen=True)
class StreamLayout:
    """What fixes the deterministic stream; a resume into a different layout cannot be exact.
    samples: the training shards' total size, which places the readers' ranges (None: unknown)."""

    world: int
    workers: int
    batch_size: int
    batches_per_epoch: int
    resampled: bool
    seed: int
    shards: int
    samples: int | None


class ResumePoint:
    """(epoch, batches consumed in it) shared with persistent DataLoader workers; epoch -1: no resume."""

    def __init__(self) -> None:
        self._shared = multiprocessing.Array("q", [-1, 0])

    def set(self, epoch: int, batches: int) -> None:
        self._shared[0], self._shared[1] = epoch, batches

    def plan(self, epoch: int, worker: int, workers: int) -> tuple[int, int]:
        """(logical worker, batches it skips) for this worker slot in `epoch`."""
        resume_epoch, consumed = self._shared[0], self._shared[1]
        if epoch != resume_epoch or consumed == 0:
            return worker, 0
        logical = (worker + consumed % workers) % workers
        return logical, len(range(logical, consumed, workers))


def skip(groups: Iterator[list], count: int, discard_counts: Callable[[], object]) -> None:
    """Consume `count` sample groups without transforming or tokenizing them (their images are not decoded
    either: `clip_train.data.deferred_decode`), and drop the bad-sample counts they carried (the checkpoint
    already holds them)."""
    for _ in range(count):
        if next(groups, None) is None:
            break
    discard_counts()


def batches_into_epoch(processed: int, batches_per_epoch: int) -> int:
    """The batches consumed in the current epoch, 0 to `batches_per_epoch`, from Lightning's count of processed
    batches. The two differ after a resume from a checkpoint saved at an epoch's last batch: Lightning resets its
    count at the next epoch only when it knows the loader's length, and a stream has none, so its count runs on
    from the finished epoch's (8, 9, ... for an epoch of 8). Every epoch yields exactly `batches_per_epoch`
    batches, so the remainder is the position."""
    return (processed - 1) % batches_per_epoch + 1 if processed > 0 else 0


def position_state(epoch: int, batches_consumed: int, layout: StreamLayout) -> dict:
    return {"epoch": epoch, "batches_consumed": batches_consumed, "layout": asdict(layout)}


def resume_position(state: dict) -> tuple[int, int]:
    """(epoch, batches consumed in it) where a resumed stream continues, from a `position_state`.

    A checkpoint saved after an epoch's last batch (a periodic one, or the last step of a run that stopped at
    `trainer.max_steps` there) holds the epoch with all its batches consumed. Lightning resumes it by starting the
    next epoch without calling `on_train_epoch_start`, so the position moves to that epoch's start here; otherwise
    every worker would skip the whole finished epoch again and the next epoch would yield no batch.
    """
    epoch, consumed = state["epoch"], state["batches_consumed"]
    if consumed >= state["layout"]["batches_per_epoch"]:
        return epoch + 1, 0
    return epoch, consumed


def check_layout(saved: dict, layout: StreamLayout) -> None:
    """Warn when the checkpoint's stream was laid out differently: the resume then only keeps the batch count."""
    if saved != asdict(layout):
        changed = {k: (v, asdict(layout)[k]) for k, v in saved.items() if asdict(layout).get(k) != v}
        log.warning(
            "the training data layout changed since the checkpoint (%s, as (then, now)): the stream resumes at the same "
            "batch count of the new layout, so samples of this epoch may repeat or be skipped",
            changed,
        )


class StreamPosition:
    """A LightningDataModule's stream position in every checkpoint, and a resumed stream's start: mixed into the
    trainer's `ShardDataModule` and the VLM's `ConversationDataModule` before `LightningDataModule`.

    The class it is mixed into holds `_epoch` (a shared `multiprocessing.Value`, read by persistent workers),
    `_resume_point` (a `ResumePoint`), `batches_per_epoch` and `layout` (a `StreamLayout`); `stream_name` names
    the stream in the resume log line.
    """

    stream_name = "the training stream"

    def set_epoch(self, epoch: int) -> None:
        """Seeds the next epoch's order (also in persistent workers)."""
        self._epoch.value = epoch

    def state_dict(self) -> dict:
        """The epoch and the batches this rank's training loop has consumed in it (the same on every rank), as
        Lightning's progress tracking counts them; nothing outside fitting."""
        if self.trainer is None or self.trainer.state.fn != TrainerFn.FITTING:
            return {}
        processed = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return position_state(self.trainer.current_epoch, batches_into_epoch(processed, self.batches_per_epoch), self.layout)

    def load_state_dict(self, state: dict) -> None:
        """Resume the stream where the checkpoint left it."""
        if not state:
            return
        check_layout(state["layout"], self.layout)
        epoch, consumed = resume_position(state)
        self.set_epoch(epoch)  # a mid-epoch restart does not call on_train_epoch_start
        self._resume_point.set(epoch, consumed)
        log.info("resuming %s at epoch %d after %d batches", self.stream_name, epoch, consumed)
