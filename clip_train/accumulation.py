"""One contrastive optimizer step over k micro-batches, with the gradients of the whole batch.

Summing the gradients of k separate contrastive losses is not the large-batch gradient: each
micro-batch would only see its own negatives. Instead (feature caching, as in GradCache):

1. encode every micro-batch without gradient and keep the features (B×D per tower);
2. for micro-batch j, encode it again with gradient and evaluate the full-batch loss on the
   cached features with slot j replaced by the fresh ones, then backpropagate.

Each pass differentiates the same full-batch loss through its own slice only, so the summed
tower gradients are exactly the full-batch gradients. The temperature appears in every pass,
so it takes part in one pass only (the last; under DDP every parameter must then join the one
synchronised backward) and gets its true gradient, not k times it. The random state is
replayed for each recomputation, so dropout and patch dropout draw the same masks twice.
Memory: activations of one micro-batch, plus B×D features per tower.
"""

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch

from clip_train.loss import ContrastiveLoss
from clip_train.model import DualEncoder


def split_batch(batch: dict, parts: int) -> list[dict]:
    """Split every tensor (and list) of `batch` into `parts` equal chunks along the first dimension."""
    size = batch["image"].shape[0]
    if size % parts:
        raise ValueError(f"data.batch_size={size} is not divisible by optim.accumulate={parts}")
    step = size // parts
    return [{key: value[i * step : (i + 1) * step] for key, value in batch.items() if key != "bad_samples"}
            for i in range(parts)]  # fmt: skip


class _RandomState:
    """The CPU and accelerator random states, to replay one forward's randomness."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)


def contrastive_backward(
    model: DualEncoder,
    loss_fn: ContrastiveLoss,
    batch: dict,
    micro_batches: int,
    backward: Callable[[torch.Tensor], None],
    no_sync: Callable[[], AbstractContextManager],
) -> torch.Tensor:
    """Run forward and backward for `batch` in `micro_batches` pieces; returns the (detached) batch loss.

    backward: how to backpropagate a loss (Lightning's `manual_backward`, for precision plugins).
    no_sync: a context in which backward skips the DDP gradient all-reduce; every pass but the
        last runs inside it, so gradients are reduced once per optimizer step.
    """
    if micro_batches == 1:
        image_features, text_features = model(batch)
        loss = loss_fn(image_features, text_features, model.logit_scale)
        backward(loss)
        return loss.detach()
    chunks = split_batch(batch, micro_batches)
    states, cached_images, cached_texts = [], [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(_RandomState())
            image_features, text_features = model(chunk)
            cached_images.append(image_features)
            cached_texts.append(text_features)
    for j, chunk in enumerate(chunks):
        last = j == micro_batches - 1
        with nullcontext() if last else no_sync():
            states[j].restore()
            image_features, text_features = model(chunk)
            images = torch.cat(cached_images[:j] + [image_features] + cached_images[j + 1 :])
            texts = torch.cat(cached_texts[:j] + [text_features] + cached_texts[j + 1 :])
            logit_scale = model.logit_scale if last else model.logit_scale.detach()
            loss = loss_fn(images, texts, logit_scale)
            backward(loss)
    return loss.detach()
