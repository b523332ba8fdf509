"""Tiny dual encoders and towers that tests build directly (without configs)."""

import torch
from helpers import COLORS
from torch import nn

from clip_train.data.tokenizer import train_caption_tokenizer
from clip_train.data.transforms import CLIP_MEAN, CLIP_STD
from clip_train.inference import ClipModel
from clip_train.model import CausalTextTower, DualEncoder, ImageTower
from clip_train.recipe import Recipe


def small_encoder(embed_dim: int = 16, **image_options) -> DualEncoder:
    """timm test_vit at 32 px + a 2-layer, 32-wide causal text tower over 50 tokens of context 12."""
    return DualEncoder(
        ImageTower("test_vit", embed_dim=embed_dim, image_size=32, **image_options),
        CausalTextTower(embed_dim, vocab_size=50, width=32, layers=2, heads=2, context_length=12),
        embed_dim=embed_dim,
        image_size=32,
        context_length=12,
    )


class PatchMeanImageTower(nn.Module):
    """A `Tower` outside timm, for the tests: patches embedded linearly, normalised, averaged, projected.

    (B, 3, H, W) -> patch tokens (B, H/patch · W/patch, width) -> mean (B, width) -> projection (B, embed_dim).
    """

    def __init__(self, embed_dim: int, width: int = 16, patch: int = 8):
        super().__init__()
        self.embed_dim, self.token_width = embed_dim, width
        self.patches = nn.Conv2d(3, width, patch, stride=patch)
        self.norm = nn.LayerNorm(width)
        self.projection = nn.Linear(width, embed_dim, bias=False)

    def forward_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.norm(self.patches(images).flatten(2).transpose(1, 2))
        return self.projection(tokens.mean(dim=1)), tokens

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_tokens(images)[0]

    def no_weight_decay(self) -> set[str]:
        return set()

    def lock(self, unlocked_groups: int = 0, freeze_norm: bool = True) -> None:
        if unlocked_groups == 0:
            self.patches.requires_grad_(False)
            self.norm.requires_grad_(not freeze_norm)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Nothing to recompute: one layer."""


def tiny_clip_model() -> ClipModel:
    """A random-init test_vit + 2-layer text tower, the same on every process (seeded), with a BPE tokenizer."""
    tokenizer = train_caption_tokenizer([f"a {c} square" for c in COLORS] * 4, vocab_size=300)
    torch.manual_seed(0)
    model = DualEncoder(
        ImageTower("test_vit", embed_dim=16, image_size=32),
        CausalTextTower(16, vocab_size=len(tokenizer), width=32, layers=2, heads=2, context_length=12),
        embed_dim=16,
        image_size=32,
        context_length=12,
    )
    return ClipModel(model, tokenizer, Recipe(model={}, image_mean=CLIP_MEAN, image_std=CLIP_STD))
