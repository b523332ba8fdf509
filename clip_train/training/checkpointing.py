"""Checkpoint files that survive a kill, and a periodic checkpoint that also saves the final step.

Lightning's own local save serialises to memory, writes a file in the system temporary folder,
then moves it into place. When that folder is on another file system than the run directory (a
node-local /tmp and a shared /scratch, the usual cluster set-up), the move is a copy into the
final name, and a kill during the copy leaves a truncated checkpoint where the previous one was.
`AtomicCheckpointIO` writes beside the target, syncs, then renames: the name always holds a
complete checkpoint, the old one or the new one.
"""

import glob
import os
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO


def _sync_folder(folder: str) -> None:
    """Make a rename in `folder` durable (a no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Local checkpoints written to `<path>.partial-<pid>`, fsynced, then renamed over `path`; remote ones
    (s3://, gs://, ...) as Lightning writes them (object stores publish an object only once it is whole)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options for local checkpoints")
        path = os.path.abspath(str(path).removeprefix("file://"))
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        partial = f"{path}.partial-{os.getpid()}"
        try:
            with open(partial, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, path)
        finally:
            if os.path.exists(partial):
                os.remove(partial)
        _sync_folder(folder)
        for stale in glob.glob(glob.escape(path) + ".partial-*"):  # left by a process killed while saving
            os.remove(stale)


class StepCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` that also saves the run's last step, whatever it is: `every_n_train_steps` alone would
    leave the last steps of a run whose length is not a multiple of it unsaved.

    A run that stops at `trainer.max_steps` saves right after that step's batch, as a periodic checkpoint
    would, not when training ends: by then Lightning has closed the epoch (its loop counts a `max_steps` stop
    as a finished epoch), and a run extended from that checkpoint to more steps would start the next epoch
    and never read the rest of this one. Saved mid-epoch, the extension continues the same epoch where the
    data position left it. A run that ends with its epochs (`trainer.max_epochs`) saves when training ends.
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args, **kwargs) -> None:
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
        if 0 <= trainer.max_steps <= trainer.global_step:  # Lightning stops after this batch
            self._save_unless_saved(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save_unless_saved(trainer)
        super().on_train_end(trainer, pl_module)

    def _save_unless_saved(self, trainer: L.Trainer) -> None:
        if self._should_skip_saving_checkpoint(trainer):  # already saved at this step
            return
        candidates = self._monitor_candidates(trainer)
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)
