"""Callbacks: training throughput and model FLOPs utilisation on the dashboard."""

import logging
import time
from collections import deque

import lightning as L
import torch

from clip_train.training.flops import training_flops_per_sample
from clip_train.training.peak_flops import device_peak_flops

log = logging.getLogger(__name__)


class ThroughputMonitor(L.Callback):
    """Logs `train/samples_per_sec` (global: all ranks), `train/data_wait` and `train/mfu` over the last `window` steps.

    A step's time runs from one batch's end to the next batch's end; the part before the next
    batch arrives (`on_train_batch_start`) is time spent waiting for data, reported as a share.
    MFU is the model's training FLOPs per sample (`clip_train.training.flops`, counted once when fitting
    starts) times samples/s, over the peak of all devices (`clip_train.training.peak_flops`: the vendor's
    dense bf16 figure per GPU, the measured fp32 matmul rate on a CPU); not logged when the model's FLOPs or the
    device's peak is unknown. Values are logged as CPU tensors: a Python number would be copied
    to the device, which on CUDA waits for the queued work. Timing never waits for the device
    either, so with a deep CUDA queue one step's time may include part of another's: the
    window's average is the steady rate.
    """

    def __init__(self, window: int = 20):
        self.window = window
        self._steps: deque[tuple[float, float, int]] = deque(maxlen=window)
        self._last_end: float | None = None
        self._batch_start = 0.0
        self.flops_per_sample: float | None = None
        self.peak_flops: float | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        self.flops_per_sample = training_flops_per_sample(pl_module.model)
        self.peak_flops, source = device_peak_flops(trainer.strategy.root_device)
        log.info("training FLOPs per sample: %s; device peak: %s FLOP/s (%s)", self.flops_per_sample, self.peak_flops, source)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._last_end = None  # the wait for a new epoch's first batch is worker start-up, not steady state

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._last_end is not None:
            samples = batch["image"].shape[0] * trainer.world_size
            self._steps.append((now - self._last_end, self._batch_start - self._last_end, samples))
            step_time = sum(s[0] for s in self._steps)
            samples_per_sec = sum(s[2] for s in self._steps) / step_time
            pl_module.log("train/samples_per_sec", torch.tensor(samples_per_sec), prog_bar=True)
            pl_module.log("train/data_wait", torch.tensor(sum(s[1] for s in self._steps) / step_time))
            if self.peak_flops and self.flops_per_sample:
                mfu = self.flops_per_sample * samples_per_sec / (self.peak_flops * trainer.world_size)
                pl_module.log("train/mfu", torch.tensor(mfu))
        self._last_end = now
