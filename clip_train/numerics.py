"""Numerical faults: an optimizer step whose loss or gradients are not finite is skipped, on every rank.

The check is reduced over ranks, so all ranks skip the same steps (a step taken on some ranks
only would make the replicas drift apart, and a rank that stops alone hangs the others). After
`max_consecutive` bad steps in a row the run stops: the parameters are still those of the last
good step, and the last checkpoint is the one to resume from once the cause is fixed.

Under fp16 (`precision=16-mixed`) gradients carry the loss scaler's factor, and a step whose loss
is finite but whose scaled gradients overflow is the scaler's normal working, not a fault: as
torch's `GradScaler` does, the step is skipped and the scale backs off. Such steps are counted with
the skipped ones but never stop the run; a non-finite loss still does.
"""

from collections.abc import Iterable

import torch

from clip_train.distributed import all_reduce_sum


class NonFiniteTraining(RuntimeError):
    """Too many consecutive optimizer steps had a non-finite loss or gradient."""


@torch.no_grad()
def step_verdict(loss: torch.Tensor, parameters: Iterable[torch.nn.Parameter]) -> tuple[bool, bool]:
    """(loss finite on every rank, every gradient finite on every rank): one 2-element all-reduce, one host sync."""
    grads = [p.grad for p in parameters if p.grad is not None]
    grad_norm = torch.nn.utils.get_total_norm(grads) if grads else loss.new_zeros(())
    bad = torch.stack([~torch.isfinite(loss.float()), ~torch.isfinite(grad_norm.to(loss.device))]).float()
    loss_bad, grads_bad = all_reduce_sum(bad).tolist()
    return loss_bad == 0, grads_bad == 0


class BadStepGuard:
    """Counts skipped steps and raises `NonFiniteTraining` after `max_consecutive` in a row (None: never)."""

    def __init__(self, max_consecutive: int | None):
        if max_consecutive is not None and max_consecutive < 1:
            raise ValueError(f"optim.max_consecutive_bad_steps must be at least 1 or null, got {max_consecutive}")
        self.max_consecutive = max_consecutive
        self.skipped = 0
        self.streak = 0

    def good(self) -> None:
        self.streak = 0

    def overflow(self) -> None:
        """A loss-scaler overflow (fp16): skipped and counted, but no fault, so the streak stands still."""
        self.skipped += 1

    def bad(self, step: int, last_checkpoint: str | None) -> None:
        self.skipped += 1
        self.streak += 1
        if self.max_consecutive is not None and self.streak >= self.max_consecutive:
            where = (
                f"The last good checkpoint is {last_checkpoint}: resume from it with ckpt_path={last_checkpoint}"
                if last_checkpoint
                else "No checkpoint was written yet: restart"
            )
            raise NonFiniteTraining(
                f"{self.streak} consecutive optimizer steps had a non-finite loss or gradient (after step {step}); "
                f"training stopped with the parameters of step {step}. {where} after lowering optim.optimizer.lr "
                "or checking the data (optim.max_consecutive_bad_steps sets how many bad steps in a row are tolerated)"
            )
