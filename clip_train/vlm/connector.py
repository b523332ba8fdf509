"""The connector between image tokens and the language model: LLaVA-1.5's two-layer MLP."""

import torch
from torch import nn


class MlpConnector(nn.Module):
    """image tokens (B, N, image_width) -> (B, N, lm_width): Linear, GELU, Linear, one token at a time (LLaVA-1.5's
    `mlp2x_gelu`), so the language model sees as many image tokens as the tower gives."""

    def __init__(self, image_width: int, lm_width: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(image_width, lm_width), nn.GELU(), nn.Linear(lm_width, lm_width))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.layers(tokens)
