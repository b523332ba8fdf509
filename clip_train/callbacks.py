"""Callbacks: training throughput on the dashboard."""

import time
from collections import deque

import lightning as L


class ThroughputMonitor(L.Callback):
    """Logs `train/samples_per_sec` (global: all ranks) and `train/data_wait` over the last `window` steps.

    A step's time runs from one batch's end to the next batch's end; the part before the next
    batch arrives (`on_train_batch_start`) is time spent waiting for data, reported as a share.
    """

    def __init__(self, window: int = 20):
        self.window = window
        self._steps: deque[tuple[float, float, int]] = deque(maxlen=window)
        self._last_end: float | None = None
        self._batch_start = 0.0

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
            pl_module.log("train/samples_per_sec", sum(s[2] for s in self._steps) / step_time, prog_bar=True)
            pl_module.log("train/data_wait", sum(s[1] for s in self._steps) / step_time)
        self._last_end = now
