"""Test-only callbacks, added from the command line (`+callbacks.NAME._target_=faults.CLASS`): they record
what a run saw and inject the faults a run must survive (kill -9, a stalled checkpoint write, a NaN loss)."""

import io
import json
import os
import signal
import time

import lightning as L
import torch

from clip_train.training.fsdp import whole


def _append_line(path: str, record: dict) -> None:
    """One JSON line, on disk before the call returns (a kill -9 right after must not lose it)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_lines(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


class BatchLog(L.Callback):
    """Writes, per training batch: rank, epoch, batch index in the epoch, optimizer step after it, sample keys, loss."""

    def __init__(self, path: str):
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        record = {
            "rank": trainer.global_rank,
            "epoch": trainer.current_epoch,
            "batch_idx": batch_idx,
            "step": trainer.global_step,
        }
        _append_line(self.path, record | {"keys": list(batch["key"]), "loss": float(loss)})


class KillAt(L.Callback):
    """SIGKILLs its own process once optimizer step `step` is done (after every other callback's batch end)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class SignalAt(L.Callback):
    """Sends `signal` (a name such as SIGTERM) to its own process once optimizer step `step` is done."""

    def __init__(self, step: int, signal: str):
        self.step, self.signal = step, signal

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), getattr(signal, self.signal))


class StallCheckpointWrite(L.Callback):
    """After step `after_step`, the next write of a file named like `name` writes half its bytes, touches
    `ready`, and hangs, as a process killed mid-save would have left it."""

    def __init__(self, after_step: int, name: str, ready: str):
        self.after_step, self.name, self.ready = after_step, name, ready

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_step < self.after_step or getattr(torch.save, "stalls", False):
            return
        real_save, ready = torch.save, self.ready

        def stalling_save(obj, f, *args, **kwargs):
            if self.name not in str(getattr(f, "name", f)):
                return real_save(obj, f, *args, **kwargs)
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            open(ready, "w").close()
            time.sleep(600)

        stalling_save.stalls = True
        torch.save = stalling_save


class NonFiniteLossAt(L.Callback):
    """Makes the objective's loss NaN on the given training batches (counted from 0 over the run), and records the
    parameters, optimizer step counts and learning rate around each of them to `record` (torch.save)."""

    def __init__(self, batches: list[int], record: str):
        self.batches, self.record = set(batches), record
        self._seen = 0
        self._before: dict = {}
        self._records: list = []

    def setup(self, trainer, pl_module, stage: str) -> None:
        def poison(module, args, output):
            return {**output, "loss": output["loss"] * float("nan")} if self._seen in self.batches else output

        pl_module.loss.register_forward_hook(poison)

    def _snapshot(self, trainer, pl_module) -> dict:
        optimizer = trainer.optimizers[0]
        steps = [float(state["step"]) for state in optimizer.state.values() if "step" in state]
        return {
            "params": {name: p.detach().clone() for name, p in pl_module.named_parameters()},
            "optimizer_steps": steps,
            "lr": trainer.lr_scheduler_configs[0].scheduler.get_last_lr()[0],
            "global_step": trainer.global_step,
        }

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._before = self._snapshot(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._records.append({"batch": self._seen, "before": self._before, "after": self._snapshot(trainer, pl_module)})
        self._seen += 1
        torch.save(self._records, self.record)


class GradientDump(L.Callback):
    """Rank 0 saves {parameter name: whole gradient} of the first optimizer step to `path`, after the
    gradients are reduced over ranks and before the optimizer reads them; FSDP's shards are gathered."""

    def __init__(self, path: str):
        self.path = path

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.global_step:
            return
        grads = {name: whole(p.grad).clone() for name, p in pl_module.model.named_parameters() if p.grad is not None}
        if trainer.is_global_zero:
            torch.save(grads, self.path)


class TeacherState(L.Callback):
    """After each training batch, one JSON line per rank to `path` on the distillation teacher: whether every parameter
    is a sharded DTensor, whether it is in training mode, and whether any parameter requires a gradient or has one."""

    def __init__(self, path: str):
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        from torch.distributed.tensor import DTensor

        from clip_train.objectives.distillation import teachers

        (teacher,) = teachers(pl_module.loss)
        parameters = list(teacher.model.parameters())
        _append_line(self.path, {
            "rank": trainer.global_rank,
            "sharded": all(isinstance(p, DTensor) for p in parameters),
            "training": teacher.model.training,
            "trainable": any(p.requires_grad or p.grad is not None for p in parameters),
        })  # fmt: skip
