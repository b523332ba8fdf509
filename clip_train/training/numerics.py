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
from dataclasses import dataclass

import torch
from torch.distributed.tensor import DTensor

from clip_train.distributed import all_reduce_sum, rank_and_world


class NonFiniteTraining(RuntimeError):
    """Too many consecutive optimizer steps had a non-finite loss or gradient."""


@dataclass
class StepVerdict:
    """loss_finite, grads_finite: on every rank. mean_loss: the loss averaged over ranks, on the host
    (it came with the flags, so logging it costs no further sync or collective). grad_norm: () the
    total L2 norm of all gradients, on their device, as the gradients carry it (times the loss scale
    under fp16); clipping and the `train/grad_norm` log reuse it instead of summing the gradients again."""

    loss_finite: bool
    grads_finite: bool
    mean_loss: float
    grad_norm: torch.Tensor


def local_grads(parameters: Iterable[torch.nn.Parameter]) -> list[torch.Tensor]:
    """The gradients as this rank holds them: under FSDP the local shard of each (a view, so scaling it
    in place scales the sharded gradient), otherwise the whole gradient."""
    grads = [p.grad for p in parameters if p.grad is not None]
    return [grad.to_local() if isinstance(grad, DTensor) else grad for grad in grads]


def is_sharded(parameters: Iterable[torch.nn.Parameter]) -> bool:
    """Whether the parameters are FSDP shards (DTensors), each rank holding a disjoint part."""
    return any(isinstance(p, DTensor) for p in parameters)


@torch.no_grad()
def clip_to_norm_(grads: list[torch.Tensor], max_norm: float, total_norm: torch.Tensor) -> None:
    """Scale `grads` in place by min(1, max_norm / total_norm), as `clip_grad_norm_` does, with the total
    norm given (under FSDP, of all ranks' shards)."""
    if grads:
        torch._foreach_mul_(grads, (max_norm / (total_norm + 1e-6)).clamp(max=1.0).to(grads[0].device))


@torch.no_grad()
def step_verdict(loss: torch.Tensor, parameters: Iterable[torch.nn.Parameter]) -> StepVerdict:
    """The step's verdict from one 4-element all-reduce and one host sync (the skip decision is taken on the host).

    Under FSDP each rank holds a disjoint shard of the gradients, so the total norm is the root of the
    squared shard norms summed over ranks; otherwise (one device, DDP) every rank holds the whole
    gradient and its own norm is the total.
    """
    parameters = list(parameters)
    sharded = is_sharded(parameters)
    grads = local_grads(parameters)
    local_norm = torch.nn.utils.get_total_norm(grads).to(loss.device) if grads else loss.new_zeros(())
    loss_bad, grads_bad = ~torch.isfinite(loss.float()), ~torch.isfinite(local_norm)
    to_reduce = [loss_bad.float(), grads_bad.float(), loss.detach().float(), local_norm.float().square()]
    reduced = all_reduce_sum(torch.stack(to_reduce))
    grad_norm = reduced[3].sqrt() if sharded else local_norm
    loss_bad, grads_bad, loss_sum = reduced[:3].tolist()
    return StepVerdict(loss_bad == 0, grads_bad == 0, loss_sum / rank_and_world()[1], grad_norm)


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
