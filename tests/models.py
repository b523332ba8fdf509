"""Tiny dual encoders that tests build directly (without configs)."""

import torch
from samples import COLORS

from clip_train.data.tokenizer import train_caption_tokenizer
from clip_train.data.transforms import CLIP_MEAN, CLIP_STD
from clip_train.inference import ClipModel
from clip_train.model import CausalTextTower, DualEncoder, ImageTower


def small_encoder(embed_dim: int = 16, **image_options) -> DualEncoder:
    """timm test_vit at 32 px + a 2-layer, 32-wide causal text tower over 50 tokens of context 12."""
    return DualEncoder(
        ImageTower("test_vit", embed_dim=embed_dim, image_size=32, **image_options),
        CausalTextTower(embed_dim, vocab_size=50, width=32, layers=2, heads=2, context_length=12),
        embed_dim=embed_dim,
        image_size=32,
        context_length=12,
    )


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
    return ClipModel(model, tokenizer, {"image_mean": CLIP_MEAN, "image_std": CLIP_STD})
