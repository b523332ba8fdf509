"""The dual encoder: two towers into one L2-normalised space, plus the learnable temperature."""

import math

import torch
from torch import nn

from clip_train.model.outputs import TrainingOutputs
from clip_train.model.tower import Tower, missing_members


class DualEncoder(nn.Module):
    """Image tower + text tower + `logit_scale`, the log of the inverse temperature (+ `logit_bias`).

    Each tower is a `Tower` (`clip_train.model.tower`); a module lacking a member is refused here,
    by name. `embed_dim`, `image_size` and `context_length` describe the model's inputs and outputs for
    whoever feeds it (data pipeline, inference API); the towers must agree with them.

    `logit_scale` starts at ln(1/0.07) as in CLIP and is clamped to at most `max_logit_scale`
    (ln 100) after every optimizer step, which keeps early training from collapsing into a
    temperature spike; `max_logit_scale=None` leaves it unbounded above (SigLIP).

    `logit_bias` is a parameter only when `init_logit_bias` is set, by a loss that uses it
    (`loss=siglip`); otherwise it is None, so no parameter goes unused under DDP.

    `output_fields` names the `TrainingOutputs` fields that `training_forward` always fills, so an
    objective can be checked against the model before training (`clip_train.objectives.check_objective`).
    """

    output_fields = frozenset({"image_features", "text_features"})

    def __init__(
        self,
        image_tower: Tower,
        text_tower: Tower,
        embed_dim: int,
        image_size: int,
        context_length: int,
        init_logit_scale: float = math.log(1 / 0.07),
        max_logit_scale: float | None = math.log(100),
        init_logit_bias: float | None = None,
    ):
        super().__init__()
        for name, tower in (("image_tower", image_tower), ("text_tower", text_tower)):
            missing = missing_members(tower)
            if missing:
                raise TypeError(
                    f"model.{name} ({type(tower).__name__}) is not a tower: it lacks {', '.join(missing)} "
                    "(the contract: clip_train.model.tower.Tower)"
                )
            if tower.embed_dim != embed_dim:
                raise ValueError(f"model.{name} projects to {tower.embed_dim} dims, not embed_dim={embed_dim}")
        self.embed_dim, self.image_size, self.context_length = embed_dim, image_size, context_length
        self.image_tower = image_tower
        self.text_tower = text_tower
        self.logit_scale = nn.Parameter(torch.full((1,), float(init_logit_scale)))
        self.max_logit_scale = max_logit_scale
        bias = None if init_logit_bias is None else nn.Parameter(torch.full((1,), float(init_logit_bias)))
        self.register_parameter("logit_bias", bias)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, D), unit norm."""
        return nn.functional.normalize(self.image_tower(images), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L), (B, L) -> (B, D), unit norm."""
        return nn.functional.normalize(self.text_tower(input_ids, attention_mask), dim=-1)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch with `image`, `input_ids` and `attention_mask` -> (image features, text features)."""
        return self.encode_image(batch["image"]), self.encode_text(batch["input_ids"], batch["attention_mask"])

    def training_forward(self, batch: dict[str, torch.Tensor]) -> TrainingOutputs:
        """What a training step needs: both towers' features, the batch's text hard negatives
        encoded when it has them, and the temperature.

        It calls the towers, not `forward`: under FSDP this method is itself a forward entry
        (`clip_train.training.fsdp`), and a forward nested in it would reshard the temperature it returns."""
        image_features = self.encode_image(batch["image"])
        text_features = self.encode_text(batch["input_ids"], batch["attention_mask"])
        return TrainingOutputs(image_features, text_features, **self.encode_negatives(batch), scalars=self.temperature())

    def encode_negatives(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch's text hard negatives (`negative_input_ids`, `negative_attention_mask`: (B, k, L)) as
        `negative_text_features` (B, k, D) with their `negative_valid` (B, k); {} for a batch without them.

        Encoded in the training forward, with the batch's captions, so that under accumulation they are
        cached and recomputed with their own micro-batch like every other per-sample output.
        """
        if "negative_input_ids" not in batch:
            return {}
        ids, mask = batch["negative_input_ids"], batch["negative_attention_mask"]
        features = self.encode_text(ids.flatten(0, 1), mask.flatten(0, 1)).view(*ids.shape[:2], -1)
        return {"negative_text_features": features, "negative_valid": batch["negative_valid"]}

    def temperature(self) -> dict[str, torch.Tensor]:
        """The objectives' scalar parameters by name: `logit_scale`, and `logit_bias` when present."""
        if self.logit_bias is None:
            return {"logit_scale": self.logit_scale}
        return {"logit_scale": self.logit_scale, "logit_bias": self.logit_bias}

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        self.logit_scale.clamp_(0, self.max_logit_scale)
