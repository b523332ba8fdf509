"""A BLIP-2-style Q-Former connector: `num_queries` learnt queries read the image tokens by cross-attention.

BLIP-2 (Li et al., 2023) puts a Q-Former between a frozen image tower and a frozen LM: learnt query tokens that
attend to each other and, by cross-attention, to the image tokens, so that the LM sees a fixed number of image
tokens however many the tower gives. BLIP-2 initialises its Q-Former from BERT-base and pre-trains it with
image-text contrast, matching and generation losses (ITC/ITM/ITG) before it meets the LM. Here none of that:
the Q-Former starts from random weights and trains in the `align` stage (and then `instruct`) with the LM's
answer loss only, as LLaVA trains its MLP.

The layers are pre-norm (LayerNorm before each attention and the MLP, the residual stream left unnormalised,
one LayerNorm at the end) rather than BERT's post-norm: BLIP-2 is post-norm because it inherits BERT's weights,
whereas a stack trained from scratch with a short warm-up, as here, trains more stably pre-norm (Xiong et al.,
2020, "On Layer Normalization in the Transformer Architecture"). No positions are added to the image tokens
(nor needed by the queries, which are distinct parameters), so the output does not depend on the image tokens'
order: where a token sits must already be in its features, which a ViT's position embeddings put there.
"""

import torch
from torch import nn


class QFormerLayer(nn.Module):
    """queries (B, Q, width), image tokens (B, N, image_width) -> queries (B, Q, width), pre-norm:
    q += SelfAttention(LN(q)); q += CrossAttention(LN(q), LN(image)); q += MLP(LN(q)) with a GELU MLP."""

    def __init__(self, width: int, image_width: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.self_norm = nn.LayerNorm(width)
        self.self_attention = nn.MultiheadAttention(width, num_heads, batch_first=True)
        self.cross_norm = nn.LayerNorm(width)
        self.image_norm = nn.LayerNorm(image_width)
        self.cross_attention = nn.MultiheadAttention(width, num_heads, kdim=image_width, vdim=image_width, batch_first=True)
        self.mlp_norm = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, queries: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        normed = self.self_norm(queries)
        queries = queries + self.self_attention(normed, normed, normed, need_weights=False)[0]
        image = self.image_norm(image)
        queries = queries + self.cross_attention(self.cross_norm(queries), image, image, need_weights=False)[0]
        return queries + self.mlp(self.mlp_norm(queries))


class QFormerConnector(nn.Module):
    """image tokens (B, N, image_width) -> (B, num_queries, lm_width) for any N: `num_queries` learnt queries of
    `width` through `num_layers` `QFormerLayer`s, a final LayerNorm, then a linear projection into the LM's width."""

    def __init__(
        self,
        image_width: int,
        lm_width: int,
        num_queries: int = 32,
        num_layers: int = 2,
        width: int = 128,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        if width % num_heads:
            raise ValueError(f"connector.width={width} must be a multiple of connector.num_heads={num_heads}")
        if num_queries < 1 or num_layers < 1:
            raise ValueError(f"connector.num_queries={num_queries} and connector.num_layers={num_layers} must be >= 1")
        self.queries = nn.Parameter(torch.randn(num_queries, width) * 0.02)  # BERT's (and BLIP-2's) init scale
        self.layers = nn.ModuleList(QFormerLayer(width, image_width, num_heads, mlp_ratio) for _ in range(num_layers))
        self.norm = nn.LayerNorm(width)
        self.projection = nn.Linear(width, lm_width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        queries = self.queries.expand(len(tokens), -1, -1)
        for layer in self.layers:
            queries = layer(queries, tokens)
        return self.projection(self.norm(queries))
