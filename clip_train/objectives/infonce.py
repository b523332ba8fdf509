"""Symmetric InfoNCE over the global batch, computed as local rows against gathered columns.

On rank r with local batch B and world size W, the image features (B, D) are scored against
all W·B text features and vice versa, giving two (B, W·B) logit blocks instead of the full
(W·B)² matrix. The positive of local row i is global column r·B + i. Features are gathered
with gradient, so the averaged DDP gradient equals the single-process full-batch gradient.

With text hard negatives (NegCLIP, `clip_train.objectives.hard_negatives`) image row i also scores
its own k negative captions: the image→text block becomes (B, W·B + k), its last k columns local
to row i. They need no gather, and each rank's gradient for them is already the full-batch one.
"""

import torch
import torch.nn.functional as F

from clip_train.distributed import gather_with_grad, rank_and_world
from clip_train.model.outputs import TrainingOutputs
from clip_train.objectives.hard_negatives import checked_negatives, negative_cosines
from clip_train.objectives.objective import Objective


def infonce_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    negative_text_features: torch.Tensor | None = None,
    negative_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """CLIP's loss: mean of image→text and text→image cross-entropy at temperature 1/exp(logit_scale).

    image_features, text_features: (B, D), L2-normalised; logit_scale: 0-d or (1,) log of the inverse temperature;
    negative_text_features: (B, k, D) L2-normalised, negative_valid: (B, k) bool, for text hard negatives.

    Computed in at least float32, also under bf16/fp16 autocast: the logits of a large batch
    at scale 100 lose the ranking signal in a 7-bit mantissa.
    """
    with torch.autocast(device_type=image_features.device.type, enabled=False):
        dtype = torch.promote_types(image_features.dtype, torch.float32)  # float64 stays float64
        image_features, text_features = image_features.to(dtype), text_features.to(dtype)
        rank, _ = rank_and_world()
        all_image_features = gather_with_grad(image_features)
        all_text_features = gather_with_grad(text_features)
        scale = logit_scale.to(dtype).exp()
        logits_per_image = scale * image_features @ all_text_features.T
        if negative_text_features is not None:
            cosines = negative_cosines(image_features, negative_text_features)
            extra = (scale * cosines).masked_fill(~negative_valid, float("-inf"))
            logits_per_image = torch.cat([logits_per_image, extra], dim=1)
        logits_per_text = scale * text_features @ all_image_features.T
        batch = image_features.shape[0]
        labels = torch.arange(batch, device=image_features.device) + rank * batch
        return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


class InfoNCE(Objective):
    """`infonce_loss` of the model's features at its temperature, as {"loss": ...}.

    text_hard_negatives: k false captions per image (made by the data workers), scored as extra
        image→text columns of their own image only; 0 for plain CLIP.
    """

    reads = frozenset({"image_features", "text_features"})
    scalars = frozenset({"logit_scale"})

    def __init__(self, text_hard_negatives: int = 0):
        super().__init__()
        self.text_hard_negatives = text_hard_negatives

    def forward(self, outputs: TrainingOutputs) -> dict[str, torch.Tensor]:
        negatives = checked_negatives(outputs, self.text_hard_negatives)
        return {"loss": infonce_loss(outputs.image_features, outputs.text_features, outputs.scalars["logit_scale"], *negatives)}
