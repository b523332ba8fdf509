"""Training FLOPs of a model per sample, counted once on a meta-device copy (no memory, no compute).

torch's `FlopCounterMode` adds up the FLOPs of every matmul, convolution and attention call
from their shapes, so the count runs on a copy of the model whose tensors are on the `meta`
device: the live model's gradients, random state and buffers are never touched, and a ViT-B/16
is counted in about a second on any machine. The count is one forward and one backward
of the training objective on a batch of 2: both towers (and a CoCa decoder), and InfoNCE on
their features, whose B×B logits add a per-sample share that grows with the batch but stays
far below the towers' (ViT-B/16 at 224 px: 123 GFLOP per sample; the logits of a batch of
4096 at embed dim 512: 0.01 GFLOP per sample).

A model whose forward reads a tensor's value (transformers' bidirectional encoders such as BERT
check whether the attention mask is all ones) cannot run on the meta device; it is not counted.
"""

import copy

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from clip_train.model import DualEncoder

COUNTED_BATCH = 2


def _infonce(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of (B, D) features written out: `infonce_loss` turns autocast off by device
    type, which the meta device has not; the FLOPs are the same (the (B, B) logits matmul)."""
    logits = logit_scale.exp() * image @ text.t()
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def training_flops_per_sample(model: DualEncoder) -> float | None:
    """FLOPs of one training forward + backward of `model`, per sample (a multiply-add counts 2);
    None when its forward reads tensor values, which the meta device does not hold."""
    meta_model = copy.deepcopy(model).to("meta").train()
    size, length = meta_model.image_size, meta_model.context_length
    batch = {
        "image": torch.zeros(COUNTED_BATCH, 3, size, size, device="meta"),
        "input_ids": torch.zeros(COUNTED_BATCH, length, dtype=torch.long, device="meta"),
        "attention_mask": torch.ones(COUNTED_BATCH, length, dtype=torch.long, device="meta"),
    }
    counter = FlopCounterMode(display=False)
    try:
        _count(meta_model, batch, counter)
    except RuntimeError as error:
        if "meta tensors" not in str(error):
            raise
        return None
    return counter.get_total_flops() / COUNTED_BATCH


def _count(meta_model: DualEncoder, batch: dict[str, torch.Tensor], counter: FlopCounterMode) -> None:
    with counter:
        outputs = meta_model.training_forward(batch)
        loss = _infonce(outputs.image_features, outputs.text_features, meta_model.logit_scale)
        if outputs.caption_nll is not None:
            loss = loss + outputs.caption_nll.mean()
        loss.backward()
