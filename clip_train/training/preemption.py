"""Preemption: SIGTERM or SIGUSR1 saves a checkpoint at the next step boundary, then the run exits.

Lightning's own handlers act at awkward moments: its SLURM SIGUSR1 handler saves inside the
signal handler, which may run in the middle of an optimizer step (a checkpoint whose optimizer
has stepped but whose schedule and data position have not), and its SIGTERM handler broadcasts
from inside the handler under DDP. Here a signal only sets a flag; after the current step, all
ranks learn whether any of them was signalled (one scalar all-reduce) and, together, save
`<run dir>/checkpoints/last.ckpt` (which `ckpt_path=last` resumes) and stop. When Lightning owns
SLURM requeue (`clip_train.train.requeue_plugins`), SIGUSR1 goes through Lightning's requeue
handler at that boundary instead: it writes `hpc_ckpt_N.ckpt` (also found by `ckpt_path=last`)
and runs `scontrol requeue`.
"""

import logging
import os
import signal

import lightning as L
import torch
from lightning.pytorch.plugins.environments import SLURMEnvironment

from clip_train.distributed import all_reduce_sum

log = logging.getLogger(__name__)


class Preempted(Exception):
    """Raised on every rank after the preemption checkpoint is saved; the process exits with 128 + signal."""

    def __init__(self, signum: int, checkpoint: str):
        super().__init__(f"stopped by {signal.Signals(signum).name} after saving {checkpoint}")
        self.signum, self.checkpoint = signum, checkpoint


class PreemptionCheckpoint(L.Callback):
    """Handles `signals` (names such as SIGTERM, SIGUSR1) during training as the module docstring says."""

    def __init__(self, signals: list[str] = ("SIGTERM", "SIGUSR1")):
        self.signals = [signal.Signals[name] for name in signals]
        self._received: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Installed now, after Lightning registered its handlers, which its teardown puts back as they were."""
        for signum in self.signals:
            signal.signal(signum, self._note)

    def _note(self, signum: int, frame) -> None:
        self._received = signum

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        local = torch.tensor(float(self._received or 0), device=pl_module.device)
        signum = int(all_reduce_sum(local).item()) if trainer.world_size > 1 else int(local.item())
        if signum == 0:
            return
        signum = self._received or min(self.signals)  # a rank that was not signalled itself
        if signum == signal.SIGUSR1 and self._lightning_requeues(trainer):
            trainer._signal_connector._slurm_sigusr_handler_fn(signum, None)
            path = trainer._checkpoint_connector._hpc_resume_path
        else:
            path = os.path.join(trainer.default_root_dir, "checkpoints", "last.ckpt")
            trainer.save_checkpoint(path)
        log.warning("%s: saved %s at step %d; rerun the same command to resume", signal.Signals(signum).name, path,
                    trainer.global_step)  # fmt: skip
        raise Preempted(signum, path)

    @staticmethod
    def _lightning_requeues(trainer: L.Trainer) -> bool:
        environment = trainer._accelerator_connector.cluster_environment
        return isinstance(environment, SLURMEnvironment) and environment.auto_requeue
