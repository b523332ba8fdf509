"""The VLM's eyes: a clip_train image tower's tokens from a chosen layer, frozen or with its top layers training.

LLaVA takes the penultimate layer of CLIP's ViT, patch tokens without the class token; both choices are
settings here (`layer`, `with_cls`). The tower comes from any clip_train checkpoint or export through
`clip_train.load`, whose recipe rebuilds it, so any tower `python -m clip_train` trains (or `model.init_from`
imported) can be a VLM's.
"""

import torch
from torch import nn

from clip_train.model.locking import lock_timm_trunk


class ImageFeatures(nn.Module):
    """pixels (B, 3, H, W) -> tokens (B, N, width): layer `layer` of the tower's timm trunk (negative counts from the
    end, -1 the last block), its patch tokens, after its prefix (class) tokens when `with_cls`.

    unlocked_layers: 0 freezes the tower; k > 0 trains the k blocks that end at the one read.
    """

    def __init__(self, tower: nn.Module, layer: int = -2, with_cls: bool = False, unlocked_layers: int = 0):
        super().__init__()
        trunk = getattr(tower, "trunk", None)
        if not hasattr(trunk, "forward_intermediates"):
            raise ValueError(
                f"vision: the image tower {type(tower).__name__} has no timm trunk with forward_intermediates, so no "
                "layer's tokens can be read from it"
            )
        self.trunk, self.layer, self.with_cls = trunk, layer, with_cls
        self.width = trunk.num_features
        self.frozen = unlocked_layers == 0
        self._unlock(unlocked_layers)

    def _unlock(self, unlocked_layers: int) -> None:
        """Train the `unlocked_layers` blocks up to and including the one read: a block after it never gets a
        gradient. A trunk without a `blocks` list (a ConvNeXt) unlocks its last timm layer groups when the last
        layer is read."""
        self.trunk.requires_grad_(False)
        if self.frozen:
            return
        blocks = getattr(self.trunk, "blocks", None)
        if isinstance(blocks, torch.nn.Sequential | torch.nn.ModuleList):
            read = self.layer % len(blocks)
            if not 0 < unlocked_layers <= read + 1:
                raise ValueError(
                    f"vision.unlocked_layers={unlocked_layers}: layer {self.layer} is block {read}, so 1..{read + 1}"
                )
            for block in list(blocks)[read + 1 - unlocked_layers : read + 1]:
                block.requires_grad_(True)
        elif self.layer == -1:
            lock_timm_trunk(self.trunk, unlocked_layers, freeze_norm=True)
        else:
            raise ValueError(
                f"vision.unlocked_layers: {type(self.trunk).__name__} has no block list; unlock with vision.layer=-1"
            )

    def train(self, mode: bool = True) -> "ImageFeatures":
        """A frozen tower stays in evaluation mode (no dropout, fixed norms) while the rest of the VLM trains."""
        return super().train(mode and not self.frozen)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # in the trunk's dtype: a stage trained with precision=bf16-true leaves the weights in bf16, while the
        # preprocessing that scores it afterwards gives fp32 pixels
        pixels = pixels.to(next(self.trunk.parameters()).dtype)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            (read,) = self.trunk.forward_intermediates(
                pixels, indices=[self.layer], return_prefix_tokens=True, norm=False, output_fmt="NLC",
                intermediates_only=True, stop_early=True,
            )  # fmt: skip
        # (patch tokens, prefix tokens); a trunk without prefix tokens (SigLIP's ViT) gives the patch tokens alone
        spatial, prefix = read if isinstance(read, tuple) else (read, None)
        if spatial.ndim == 4:  # a convolutional trunk: (B, C, H, W) -> (B, H·W, C)
            spatial = spatial.flatten(2).transpose(1, 2)
        if self.with_cls and prefix is not None:
            return torch.cat([prefix, spatial], dim=1)
        return spatial
