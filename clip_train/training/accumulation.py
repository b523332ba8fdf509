"""One optimizer step over k micro-batches, with the gradients of the whole batch.

Summing the gradients of k separate contrastive losses is not the large-batch gradient: each
micro-batch would only see its own negatives. Instead (feature caching, as in GradCache):

1. run every micro-batch's training forward without gradient and keep its outputs;
2. for micro-batch j, run it again with gradient and evaluate the objective on the whole batch's
   outputs, the cached ones with slot j replaced by the fresh ones, then backpropagate.

The outputs are `TrainingOutputs`: every tensor field is per sample (features B×D, a CoCa
caption's NLL, text hard negatives B×k×D, whatever a model adds), and the batch's outputs are the
micro-batches' concatenated field by field (a field a model does not give stays None). So this is
exact for any objective that is a function of the per-sample outputs, with no knowledge of it:
each pass differentiates the same full-batch objective through its own slice only, so the summed
tower gradients are exactly the full-batch gradients. A per-sample term (a caption's NLL) is local:
pass j differentiates only its own, the others enter as cached constants. The model's scalars (the
temperature, SigLIP's bias) appear in every pass, so they take part in one pass only (the last;
under DDP every parameter must then join the one synchronised backward) and get their true
gradient, not k times it. The random state is replayed for each recomputation, so dropout and patch
dropout draw the same masks twice. The caching pass leaves the buffers as it found them, so
BatchNorm's running statistics (and its batch count) are updated once per micro-batch, by the
recomputation, as k train-mode steps over the micro-batches would update them.
Memory: activations of one micro-batch, plus the per-sample outputs of the batch (B×D per tower,
B×k×D for hard negatives).
"""

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace

import torch
from torch import nn

from clip_train.model import DualEncoder
from clip_train.model.outputs import PER_SAMPLE_FIELDS, TrainingOutputs
from clip_train.objectives import Objective


def split_batch(batch: dict, parts: int) -> list[dict]:
    """Split every tensor (and list) of `batch` into `parts` equal chunks along the first dimension."""
    size = batch["image"].shape[0]
    if size % parts:
        raise ValueError(f"data.batch_size={size} is not divisible by optim.accumulate={parts}")
    step = size // parts
    return [{key: value[i * step : (i + 1) * step] for key, value in batch.items() if key != "bad_samples"}
            for i in range(parts)]  # fmt: skip


class RandomState:
    """The CPU and accelerator random states, to replay one forward's randomness."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)


@contextmanager
def _buffers_restored(model: nn.Module) -> Iterator[None]:
    """Put every buffer back to its value on entry (BatchNorm running statistics and counts).

    Copies back in place, so modules (and DDP) keep the very tensors they registered; costs one
    copy of the buffers, which are small next to the parameters (a ViT or text transformer has
    almost none).
    """
    saved = [(buffer, buffer.clone()) for buffer in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


def _joined(parts: list[TrainingOutputs], scalars: dict[str, torch.Tensor]) -> TrainingOutputs:
    """The batch's outputs from its micro-batches' in order: each per-sample field concatenated along
    the batch dimension (None stays None), with the given `scalars`."""
    joined = {}
    for name in PER_SAMPLE_FIELDS:
        values = [getattr(part, name) for part in parts]
        joined[name] = None if values[0] is None else torch.cat(values)
    return TrainingOutputs(**joined, scalars=scalars)


def contrastive_backward(
    model: DualEncoder,
    objective: Objective,
    batch: dict,
    micro_batches: int,
    backward: Callable[[torch.Tensor], None],
    no_sync: Callable[[], AbstractContextManager],
) -> dict[str, torch.Tensor]:
    """Run forward and backward for `batch` in `micro_batches` pieces; returns the (detached) batch losses:
    the objective's `loss` and its other named terms (`clip_train.objectives`).

    objective: maps the batch's `TrainingOutputs` (from `model.training_forward`, with the objective's own
        `side_outputs` of each micro-batch, made once) to {"loss": ..., ...}.
    backward: how to backpropagate a loss (Lightning's `manual_backward`, for precision plugins).
    no_sync: a context in which backward skips the DDP gradient all-reduce; every pass but the
        last runs inside it, so gradients are reduced once per optimizer step.
    """
    if micro_batches == 1:
        with torch.no_grad():
            side = objective.side_outputs(batch)
        losses = objective(replace(model.training_forward(batch), **side))
        backward(losses["loss"])
        return {name: value.detach() for name, value in losses.items()}
    chunks = split_batch(batch, micro_batches)
    states, sides, cached = [], [], []
    with torch.no_grad(), _buffers_restored(model):
        for chunk in chunks:
            sides.append(objective.side_outputs(chunk))
            states.append(RandomState())
            cached.append(replace(model.training_forward(chunk), **sides[-1]))
    for j, chunk in enumerate(chunks):
        last = j == micro_batches - 1
        with nullcontext() if last else no_sync():
            states[j].restore()
            fresh = replace(model.training_forward(chunk), **sides[j])
            scalars = {name: p if last else p.detach() for name, p in fresh.scalars.items()}
            losses = objective(_joined(cached[:j] + [fresh] + cached[j + 1 :], scalars))
            backward(losses["loss"])
    return {name: value.detach() for name, value in losses.items()}
