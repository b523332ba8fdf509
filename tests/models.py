"""Tiny dual encoders that tests build directly (without configs)."""

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
