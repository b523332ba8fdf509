"""SigLIP's pairwise sigmoid loss over the global batch, with text features passed round a ring.

Every image-text pair is an independent binary problem: with logit z = t·⟨x, y⟩ + b, the
loss is -log σ(z) for a matching pair and -log σ(-z) for every other pair, summed and divided
by the number of images. There is no softmax over the batch, so no rank needs all scores at
once: rank r scores its B images against its own B texts, then passes its current text block
to rank r+1 and receives rank r-1's, W-1 times (`clip_train.distributed.pass_to_next_rank`).
Memory is one B×B logit block and two B×D text blocks; nobody holds the (W·B)² matrix.

Gradients of the blocks a rank received travel back round the ring to their owners, and the
loss on rank r is divided by the local B, so the DDP average over ranks of the gradients is
the gradient of the single-process loss on the whole W·B batch.

With text hard negatives (`clip_train.objectives.hard_negatives`) each image also meets its own k
negative captions as k more non-matching pairs (label -1); they are local to the image's rank, so
they stay out of the ring.
"""

import torch
import torch.nn.functional as F

from clip_train.distributed import pass_to_next_rank, rank_and_world
from clip_train.model.outputs import TrainingOutputs
from clip_train.objectives.hard_negatives import checked_negatives, negative_cosines
from clip_train.objectives.objective import Objective


def _pair_loss(images: torch.Tensor, texts: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, matching: bool):
    """Σ -log σ(±(scale·images@texts.T + bias)); + on the diagonal only when the blocks are matching pairs."""
    logits = scale * images @ texts.T + bias
    signs = -torch.ones_like(logits)
    if matching:
        signs.diagonal().fill_(1.0)
    return -F.logsigmoid(signs * logits).sum()


def siglip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
    negative_text_features: torch.Tensor | None = None,
    negative_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sigmoid loss at inverse temperature exp(logit_scale) with bias `logit_bias`.

    image_features, text_features: (B, D) L2-normalised, the same B on every rank;
    logit_scale, logit_bias: 0-d or (1,); negative_text_features: (B, k, D) L2-normalised and
    negative_valid: (B, k) bool, for text hard negatives. Computed in at least float32, also under autocast.
    """
    with torch.autocast(device_type=image_features.device.type, enabled=False):
        dtype = torch.promote_types(image_features.dtype, torch.float32)
        images, texts = image_features.to(dtype), text_features.to(dtype)
        scale, bias = logit_scale.to(dtype).exp(), logit_bias.to(dtype)
        loss = _pair_loss(images, texts, scale, bias, matching=True)
        for _ in range(rank_and_world()[1] - 1):
            texts = pass_to_next_rank(texts)
            loss = loss + _pair_loss(images, texts, scale, bias, matching=False)
        if negative_text_features is not None:
            cosines = negative_cosines(images, negative_text_features)
            loss = loss - (F.logsigmoid(-(scale * cosines + bias)) * negative_valid).sum()
        return loss / images.shape[0]


class SigLip(Objective):
    """`siglip_loss` of the model's features at its temperature and learnt bias, as {"loss": ...}.

    It reads `logit_bias`, so the model must carry that parameter (`configs/loss/siglip.yaml` sets
    `model.init_logit_bias`); a model without one is refused (`check_objective`).
    text_hard_negatives: k false captions per image, each one more negative pair of that image; 0 for none.
    """

    reads = frozenset({"image_features", "text_features"})
    scalars = frozenset({"logit_scale", "logit_bias"})

    def __init__(self, text_hard_negatives: int = 0):
        super().__init__()
        self.text_hard_negatives = text_hard_negatives

    def forward(self, outputs: TrainingOutputs) -> dict[str, torch.Tensor]:
        negatives = checked_negatives(outputs, self.text_hard_negatives)
        scale, bias = outputs.scalars["logit_scale"], outputs.scalars["logit_bias"]
        return {"loss": siglip_loss(outputs.image_features, outputs.text_features, scale, bias, *negatives)}
