"""Alignment + uniformity (Wang & Isola, ICML 2020): a contrastive objective without a temperature.

    alignment  = mean over pairs i of ‖x_i − y_i‖^α                           (matching pairs close)
    uniformity = log mean over i ≠ j of exp(−t‖u_i − u_j‖²), for u = x and u = y   (features spread out)
    loss       = alignment + uniformity_weight × (uniformity_x + uniformity_y) / 2

x: image, y: text features, over the global batch (the paper's α = 2, t = 2). Exact under DDP:
alignment is a mean over equal local batches; for uniformity each local row scores the gathered
columns, and the rows' log-sum-exps are gathered too, so every rank computes the global value.
Gathers carry gradient, so DDP's average of the ranks' gradients is the single-process gradient.
"""

import math

import torch

from clip_train.distributed import gather_with_grad, rank_and_world
from clip_train.model.outputs import TrainingOutputs
from clip_train.objectives.objective import Objective


def _uniformity(features: torch.Tensor, t: float) -> torch.Tensor:
    """(B, D) local rows -> log mean over the global batch's ordered pairs i ≠ j of exp(−t‖u_i − u_j‖²)."""
    rank, _ = rank_and_world()
    everyone = gather_with_grad(features)  # (W·B, D)
    pairs = everyone.shape[0] * (everyone.shape[0] - 1)
    if pairs == 0:
        raise ValueError("uniformity needs at least two samples in the global batch")
    squared = features.square().sum(1, keepdim=True) + everyone.square().sum(1) - 2 * features @ everyone.T
    exponents = -t * squared.clamp(min=0)
    rows = torch.arange(features.shape[0], device=features.device)
    exponents[rows, rows + rank * features.shape[0]] = float("-inf")  # leave out i = j
    return torch.logsumexp(gather_with_grad(torch.logsumexp(exponents, dim=1)), dim=0) - math.log(pairs)


class AlignUniform(Objective):
    """{"loss", "alignment", "uniformity"} (the last: the mean of the image and text terms), in float32 or wider.

    It reads no temperature, so the trainer freezes the model's `logit_scale` (`ClipModule`).
    """

    reads = frozenset({"image_features", "text_features"})

    def __init__(self, alignment_power: float = 2.0, uniformity_t: float = 2.0, uniformity_weight: float = 1.0):
        super().__init__()
        self.alignment_power, self.uniformity_t, self.uniformity_weight = alignment_power, uniformity_t, uniformity_weight

    def forward(self, outputs: TrainingOutputs) -> dict[str, torch.Tensor]:
        image = outputs.image_features
        with torch.autocast(device_type=image.device.type, enabled=False):
            dtype = torch.promote_types(image.dtype, torch.float32)
            x, y = image.to(dtype), outputs.text_features.to(dtype)
            alignment = (x - y).norm(dim=1).pow(self.alignment_power).mean()
            uniformity = (_uniformity(x, self.uniformity_t) + _uniformity(y, self.uniformity_t)) / 2
        return {"loss": alignment + self.uniformity_weight * uniformity, "alignment": alignment, "uniformity": uniformity}
