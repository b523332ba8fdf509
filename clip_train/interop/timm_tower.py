"""The foreign formats hold our image tower as timm's model (its weights under timm's names, its
architecture as timm's arguments), so they take only a timm `ImageTower`; any other `Tower` exports
with `format=clip_train`."""

import torch
from torch import nn

from clip_train.inference import ClipModel
from clip_train.model import DualEncoder, ImageTower

IMAGE_PROJECTION = "image_tower.projection.weight"


def timm_image_tower(model: ClipModel, format_name: str) -> ImageTower:
    """`model`'s image tower; ValueError naming the tower when it is not a timm `ImageTower`."""
    tower = model.model.image_tower
    if not isinstance(tower, ImageTower):
        raise ValueError(
            f"{format_name} holds the image tower as a timm model, and {type(tower).__name__} is not a timm "
            "ImageTower; export it with format=clip_train"
        )
    return tower


def state_with_image_projection(dual_encoder: DualEncoder) -> dict[str, torch.Tensor]:
    """The model's weights, an image tower without projection (`projection: none`, SigLIP's) given the identity
    matrix (embed_dim, embed_dim) it amounts to, for the formats whose models always project (CLIPModel's and
    VisionTextDualEncoderModel's `visual_projection`)."""
    state = dual_encoder.state_dict()
    if isinstance(dual_encoder.image_tower.projection, nn.Identity):
        state[IMAGE_PROJECTION] = torch.eye(dual_encoder.embed_dim, device=dual_encoder.logit_scale.device)
    return state
