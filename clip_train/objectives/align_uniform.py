"""Alignment + uniformity (Wang & Isola, ICML 2020), a contrastive objective without a temperature.

    alignment  = mean over pairs i of ‖x_i − y_i‖^α                          (matching pairs close)
    uniformity = log mean over i ≠ j of exp(−t‖u_i − u_j‖²), for u = x and u = y  (features spread out)
    loss       = alignment + uniformity_weight × (uniformity_x + uniformity_y) / 2

with x the image and y the text features, unit-norm, over the global batch (the paper's α = 2, t = 2).
It is the worked example of README "Extending clip_train": one file and `configs/loss/align_uniform.yaml`.

Exact under DDP: alignment is a mean of per-sample terms over equal local batches. For uniformity,
each local row scores the gathered columns (gathered with gradient, the diagonal left out), and the
rows' log-sum-exps are gathered too, so every rank computes the same global value; the gradients each
rank sends back are summed over ranks, and DDP's average makes them the single-process gradient.
The objective reads no temperature, so the model's `logit_scale` is not trained (`ClipModule`).
"""

import math

import torch

from clip_train.distributed import gather_with_grad, rank_and_world
from clip_train.model.outputs import TrainingOutputs
from clip_train.objectives.objective import Objective


def _uniformity(features: torch.Tensor, t: float) -> torch.Tensor:
    """log mean over the global batch's ordered pairs i ≠ j of exp(−t‖u_i − u_j‖²), from (B, D) local rows."""
    rank, _ = rank_and_world()
    everyone = gather_with_grad(features)
    pairs = everyone.shape[0] * (everyone.shape[0] - 1)
    if pairs == 0:
        raise ValueError("uniformity needs at least two samples in the global batch")
    squared = (features.square().sum(1, keepdim=True) + everyone.square().sum(1) - 2 * features @ everyone.T).clamp(min=0)
    exponents = -t * squared
    rows = torch.arange(features.shape[0], device=features.device)
    exponents[rows, rows + rank * features.shape[0]] = float("-inf")  # leave out i = j
    return torch.logsumexp(gather_with_grad(torch.logsumexp(exponents, dim=1)), dim=0) - math.log(pairs)


class AlignUniform(Objective):
    """{"loss", "alignment", "uniformity"} (uniformity: the mean of the image and text terms).

    alignment_power: α; uniformity_t: t; uniformity_weight: the weight of uniformity in the loss.
    """

    reads = frozenset({"image_features", "text_features"})

    def __init__(self, alignment_power: float = 2.0, uniformity_t: float = 2.0, uniformity_weight: float = 1.0):
        super().__init__()
        self.alignment_power, self.uniformity_t, self.uniformity_weight = alignment_power, uniformity_t, uniformity_weight

    def forward(self, outputs: TrainingOutputs) -> dict[str, torch.Tensor]:
        """Computed in at least float32, also under autocast (like the other objectives)."""
        image = outputs.image_features
        with torch.autocast(device_type=image.device.type, enabled=False):
            dtype = torch.promote_types(image.dtype, torch.float32)
            x, y = image.to(dtype), outputs.text_features.to(dtype)
            alignment = (x - y).norm(dim=1).pow(self.alignment_power).mean()
            uniformity = (_uniformity(x, self.uniformity_t) + _uniformity(y, self.uniformity_t)) / 2
            loss = alignment + self.uniformity_weight * uniformity
        return {"loss": loss, "alignment": alignment, "uniformity": uniformity}
