"""The image tower: any timm backbone, pooled, then linearly projected into the shared space."""

import timm
import torch
from torch import nn


class ImageTower(nn.Module):
    """timm trunk (B, 3, H, W) -> pooled (B, F) -> projection (B, embed_dim), not yet normalised.

    `pool` is timm's `global_pool` ("token" for the CLS token, "avg" for the mean of patch
    tokens, "map" for attention pooling). Random init unless `pretrained`; pretrained weights
    come from timm's cache, a local file (`pretrained_cfg_overlay=dict(file=...)`) or the hub.
    """

    def __init__(
        self,
        model_name: str,
        embed_dim: int,
        image_size: int,
        pool: str = "token",
        pretrained: bool = False,
        **timm_kwargs,
    ):
        super().__init__()
        self.image_size = image_size
        create = dict(pretrained=pretrained, num_classes=0, global_pool=pool, **timm_kwargs)
        try:
            self.trunk = timm.create_model(model_name, img_size=image_size, **create)
        except TypeError as error:  # convolutional trunks take any size and have no img_size argument
            if "img_size" not in str(error):
                raise
            self.trunk = timm.create_model(model_name, **create)
        self.projection = nn.Linear(self.trunk.num_features, embed_dim, bias=False)
        nn.init.normal_(self.projection.weight, std=self.trunk.num_features**-0.5)

    def no_weight_decay(self) -> set[str]:
        """Trunk parameters timm marks as not to decay (position embeddings, class tokens)."""
        trunk_names = self.trunk.no_weight_decay() if hasattr(self.trunk, "no_weight_decay") else set()
        return {f"trunk.{name}" for name in trunk_names}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.projection(self.trunk(images))
