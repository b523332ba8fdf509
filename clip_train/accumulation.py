"""One contrastive optimizer step over k micro-batches, with the gradients of the whole batch.

Summing the gradients of k separate contrastive losses is not the large-batch gradient: each
micro-batch would only see its own negatives. Instead (feature caching, as in GradCache):

1. encode every micro-batch without gradient and keep the features (B×D per tower);
2. for micro-batch j, encode it again with gradient and evaluate the full-batch loss on the
   cached features with slot j replaced by the fresh ones, then backpropagate.

Each pass differentiates the same full-batch loss through its own slice only, so the summed
tower gradients are exactly the full-batch gradients. The temperature appears in every pass,
so it takes part in one pass only (the last; under DDP every parameter must then join the one
synchronised backward) and gets its true gradient, not k times it; so does SigLIP's bias.
A captioning model (CoCa) adds per-caption losses, which are local: pass j differentiates only
its own captions' term, the others enter as cached constants. Text hard negatives (B×k captions,
`clip_train.hard_negatives`) are encoded with their micro-batch, cached and replayed like its
captions: pass j recomputes its own, the others enter as cached features. The random state is
replayed for each recomputation, so dropout and patch dropout draw the same masks twice.
The caching pass leaves the buffers as it found them, so BatchNorm's running statistics
(and its batch count) are updated once per micro-batch, by the recomputation, as k
train-mode steps over the micro-batches would update them.
Memory: activations of one micro-batch, plus B×D features per tower (and B×k×D for hard negatives).
"""

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from torch import nn

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


def _features(model: DualEncoder, batch: dict) -> tuple:
    """(image features (B, D), text features (B, D), caption NLL (B,) or None, negatives' text features
    (B, k, D) or None): the model's training forward, plus the batch's text hard negatives encoded."""
    image_features, text_features, caption_nll = model.training_forward(batch)
    if "negative_input_ids" not in batch:
        return image_features, text_features, caption_nll, None
    ids, mask = batch["negative_input_ids"], batch["negative_attention_mask"]
    negatives = model.encode_text(ids.flatten(0, 1), mask.flatten(0, 1)).view(*ids.shape[:2], -1)
    return image_features, text_features, caption_nll, negatives


def _objective(model, loss_fn, images, texts, caption_nll, negatives, batch: dict, temperature: dict) -> dict:
    """The step's losses: the contrastive loss of all features, plus (CoCa) the weighted mean caption NLL.

    caption_nll: the (B,) per-caption losses, or None for a model without a caption decoder;
    negatives: the (B, k, D) hard negatives' features, or None (then the batch has none).
    """
    batch_size = batch["image"].shape[0]
    hard = {} if negatives is None else {"negative_text_features": negatives, "negative_valid": batch["negative_valid"]}
    contrastive = loss_fn(images, texts, **hard, **temperature)
    if caption_nll is None:
        return {"loss": contrastive}
    caption = caption_nll.sum() / batch_size
    total = model.contrastive_loss_weight * contrastive + model.caption_loss_weight * caption
    return {"loss": total, "contrastive_loss": contrastive, "caption_loss": caption}


def contrastive_backward(
    model: DualEncoder,
    loss_fn: nn.Module,
    batch: dict,
    micro_batches: int,
    backward: Callable[[torch.Tensor], None],
    no_sync: Callable[[], AbstractContextManager],
) -> dict[str, torch.Tensor]:
    """Run forward and backward for `batch` in `micro_batches` pieces; returns the (detached) batch losses:
    `loss`, and for a captioning model also `contrastive_loss` and `caption_loss`.

    loss_fn: called as loss_fn(image_features, text_features, **model.temperature()), plus
        negative_text_features= and negative_valid= when the batch has text hard negatives.
    backward: how to backpropagate a loss (Lightning's `manual_backward`, for precision plugins).
    no_sync: a context in which backward skips the DDP gradient all-reduce; every pass but the
        last runs inside it, so gradients are reduced once per optimizer step.
    """
    if micro_batches == 1:
        losses = _objective(model, loss_fn, *_features(model, batch), batch, model.temperature())
        backward(losses["loss"])
        return {name: value.detach() for name, value in losses.items()}
    chunks = split_batch(batch, micro_batches)
    states, cached = [], []
    with torch.no_grad(), _buffers_restored(model):
        for chunk in chunks:
            states.append(_RandomState())
            cached.append(_features(model, chunk))
    for j, chunk in enumerate(chunks):
        last = j == micro_batches - 1
        with nullcontext() if last else no_sync():
            states[j].restore()
            fresh = _features(model, chunk)
            outputs = cached[:j] + [fresh] + cached[j + 1 :]
            features = [None if fresh[i] is None else torch.cat([o[i] for o in outputs]) for i in range(len(fresh))]
            temperature = {name: p if last else p.detach() for name, p in model.temperature().items()}
            losses = _objective(model, loss_fn, *features, batch, temperature)
            backward(losses["loss"])
    return {name: value.detach() for name, value in losses.items()}
