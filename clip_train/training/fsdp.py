"""Fully sharded data parallel for towers too large for DDP: parameters, gradients and optimizer
state are sharded over the ranks, each wrapped layer gathered only while it runs."""

from hydra.utils import get_class
from lightning.pytorch.strategies import FSDPStrategy


def fsdp_strategy(wrap: list[str], activation_checkpointing: bool = False, **fsdp_options) -> FSDPStrategy:
    """Lightning's FSDP, wrapping every module whose class is named in `wrap` (dotted paths such as
    `timm.models.vision_transformer.Block`) as one shard unit, optionally with activation
    checkpointing on the same units; `fsdp_options` go to `FSDPStrategy` (e.g. `sharding_strategy`)."""
    layers = {get_class(path) for path in wrap}
    return FSDPStrategy(
        auto_wrap_policy=layers,
        activation_checkpointing_policy=layers if activation_checkpointing else None,
        **fsdp_options,
    )
