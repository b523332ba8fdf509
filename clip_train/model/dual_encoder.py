"""The dual encoder: two towers into one L2-normalised space, plus the learnable temperature."""

import math

import torch
from torch import nn


class DualEncoder(nn.Module):
    """Image tower + text tower + `logit_scale`, the log of the inverse softmax temperature.

    `embed_dim`, `image_size` and `context_length` describe the model's inputs and outputs for
    whoever feeds it (data pipeline, inference API); the towers must agree with them.

    `logit_scale` starts at ln(1/0.07) as in CLIP and is clamped to at most `max_logit_scale`
    (ln 100) after every optimizer step, which keeps early training from collapsing into a
    temperature spike.
    """

    def __init__(
        self,
        image_tower: nn.Module,
        text_tower: nn.Module,
        embed_dim: int,
        image_size: int,
        context_length: int,
        init_logit_scale: float = math.log(1 / 0.07),
        max_logit_scale: float = math.log(100),
    ):
        super().__init__()
        for name, tower in (("image_tower", image_tower), ("text_tower", text_tower)):
            if tower.projection.out_features != embed_dim:
                raise ValueError(f"model.{name} projects to {tower.projection.out_features} dims, not embed_dim={embed_dim}")
        self.embed_dim, self.image_size, self.context_length = embed_dim, image_size, context_length
        self.image_tower = image_tower
        self.text_tower = text_tower
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        self.max_logit_scale = max_logit_scale

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, D), unit norm."""
        return nn.functional.normalize(self.image_tower(images), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L), (B, L) -> (B, D), unit norm."""
        return nn.functional.normalize(self.text_tower(input_ids, attention_mask), dim=-1)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch with `image`, `input_ids` and `attention_mask` -> (image features, text features)."""
        return self.encode_image(batch["image"]), self.encode_text(batch["input_ids"], batch["attention_mask"])

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        self.logit_scale.clamp_(0, self.max_logit_scale)
