"""A bag-of-words text tower: one learnt vector per token, averaged over the caption, projected.

    (B, L) token ids -> token vectors (B, L, width) -> mean over the attended positions (B, width)
                     -> LayerNorm -> projection (B, embed_dim)

No attention and no positions: the caption's word order is invisible to it, so "a red circle
above a blue square" and "a blue circle above a red square" embed to the same bits, and it scores exactly
chance on the `swap_attributes`, `relation` and `word_order` compositional kinds (docs/evaluation.md,
"Compositional evaluation: bags of words") whatever it learns: the floor a sequence model must
rise above there. Elsewhere it is a fast baseline, one table lookup per token (`nn.EmbeddingBag`
sums without materialising the (B, L, width) vectors).
"""

import torch
import torch.nn.functional as F
from torch import nn


class EmbeddingBagTextTower(nn.Module):
    """A `Tower` over (input_ids, attention_mask) of shape (B, L), right-padded or not: only the mask
    says which positions count, so a pad id may also be a real token.

    width: the token vectors' size, `token_width`.
    grad_checkpointing: accepted like the other towers' option; a lookup has no activations to recompute.
    lock: freeze the token table (and with `freeze_norm`, the norm) but keep the projection training;
        `unlocked_layers` >= 1 leaves the tower's one group, table and norm, unlocked.
    """

    def __init__(
        self,
        embed_dim: int,
        vocab_size: int,
        width: int = 256,
        grad_checkpointing: bool = False,
        lock: bool = False,
        unlocked_layers: int = 0,
        freeze_norm: bool = True,
    ):
        super().__init__()
        self.embed_dim, self.token_width = embed_dim, width
        self.embedding = nn.EmbeddingBag(vocab_size, width, mode="sum")
        nn.init.normal_(self.embedding.weight, std=0.02)
        self.norm = nn.LayerNorm(width)
        self.projection = nn.Linear(width, embed_dim, bias=False)
        nn.init.normal_(self.projection.weight, std=width**-0.5)
        self.set_grad_checkpointing(grad_checkpointing)
        if lock:
            self.lock(unlocked_layers, freeze_norm)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L), (B, L) -> (B, embed_dim): the projected, normalised mean of the attended tokens' vectors."""
        # summed in token-id order: a float sum depends on its order, and a shuffled caption must give the same bits
        input_ids, order = input_ids.sort(dim=1)
        weights = attention_mask.gather(1, order).to(self.embedding.weight.dtype)
        summed = self.embedding(input_ids, per_sample_weights=weights)  # (B, width)
        mean = summed / weights.sum(dim=1, keepdim=True).clamp(min=1.0)
        return self.projection(self.norm(mean))

    def forward_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L), (B, L) -> ((B, embed_dim) as `forward`, (B, L, width) each position's token vector)."""
        return self(input_ids, attention_mask), F.embedding(input_ids, self.embedding.weight)

    def no_weight_decay(self) -> set[str]:
        """The token table: lookup rows, not weights to shrink."""
        return {"embedding.weight"}

    def lock(self, unlocked_groups: int = 0, freeze_norm: bool = True) -> None:
        if unlocked_groups >= 1:
            return
        self.embedding.requires_grad_(False)
        self.norm.requires_grad_(not freeze_norm)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Nothing to do: a lookup and a mean store no activations worth recomputing."""
