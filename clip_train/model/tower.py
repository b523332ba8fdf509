"""The tower contract: what the dual encoder, CoCa, the optimizer and the memory options need of a tower.

A tower maps one modality into the shared space. An image tower takes images (B, 3, H, W); a
text tower takes token ids and their attention mask, both (B, L), right-padded. Nothing else
about a tower is assumed: `DualEncoder` checks these members when it is built and names any
that is missing, and everything above the towers (CoCa, the optimizer's weight-decay groups,
locking, gradient checkpointing) goes through them, so a new tower is one class with these
members and one config (docs/extending.md).
"""

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Tower(Protocol):
    """An image or text tower.

    embed_dim: D, the width of `forward`'s output: the shared space's, which the dual encoder checks.
    token_width: W, the width of the token features `forward_tokens` returns (CoCa sizes its
        decoder's memory from it).
    """

    embed_dim: int
    token_width: int

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Inputs -> (B, D) features in the shared space, not yet normalised (the dual encoder normalises)."""
        ...

    def forward_tokens(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs -> ((B, D) features as `forward` gives them, (B, N, W) the token features they were pooled
        from), from one pass: CoCa's decoder reads the tokens beside the contrastive features, and a
        token-wise loss (FILIP) compares them. Text tokens include the padded positions (the mask tells
        which are real); a convolutional image trunk's (B, W, H', W') map comes as H'·W' tokens."""
        ...

    def no_weight_decay(self) -> set[str]:
        """Names of this tower's parameters, relative to it, that weight decay must spare (lookup
        tables, position embeddings, class tokens); parameters of fewer than 2 dimensions are spared anyway."""
        ...

    def lock(self, unlocked_groups: int = 0, freeze_norm: bool = True) -> None:
        """LiT: freeze the tower but its projection into the shared space and its last `unlocked_groups`
        groups of layers (its own unit: timm's layer groups, a transformer's layers); with
        `freeze_norm=False` the norm layers of the frozen part keep training."""
        ...

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute layer activations in backward instead of storing them; outputs and gradients unchanged."""
        ...


def missing_members(tower: object) -> list[str]:
    """The `Tower` members `tower` lacks, in the protocol's order (empty: it is a tower)."""
    methods = [name for name, value in vars(Tower).items() if callable(value) and not name.startswith("_")]
    return [name for name in [*Tower.__annotations__, *methods] if not hasattr(tower, name)]
