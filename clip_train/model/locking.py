"""LiT-style locking: freeze a tower's trunk except its last few blocks.

Frozen parameters get `requires_grad=False`, so the optimizer never sees them (see
`clip_train.training.optim.parameter_groups`) and no gradient memory is spent on them. The projection
into the shared space always stays trainable. With `freeze_norm=False` the normalisation
layers of the frozen part keep learning their gains and biases, which lets a locked tower
adapt its feature scale cheaply.
"""

from timm.models import group_parameters
from torch import nn

NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.RMSNorm)


def _unfreeze_norms(module: nn.Module) -> None:
    for child in module.modules():
        if isinstance(child, NORM_TYPES):
            child.requires_grad_(True)


def lock_timm_trunk(trunk: nn.Module, unlocked_groups: int, freeze_norm: bool) -> None:
    """Freeze `trunk` but its last `unlocked_groups` timm layer groups (a ViT's last group is its
    last block with the final norm; the first is the patch stem and embeddings)."""
    trunk.requires_grad_(False)
    if not freeze_norm:
        _unfreeze_norms(trunk)
    groups = group_parameters(trunk, trunk.group_matcher(coarse=True))
    parameters = dict(trunk.named_parameters())
    for group in list(groups.values())[len(groups) - unlocked_groups :] if unlocked_groups else []:
        for name in group:
            parameters[name].requires_grad_(True)


def _layer_stack(transformer: nn.Module) -> nn.ModuleList:
    """The transformer's list of layers: its largest ModuleList."""
    stacks = [m for m in transformer.modules() if isinstance(m, nn.ModuleList)]
    if not stacks:
        raise ValueError(f"{type(transformer).__name__} has no list of layers to lock")
    return max(stacks, key=lambda stack: sum(p.numel() for p in stack.parameters()))


def lock_text_transformer(transformer: nn.Module, unlocked_layers: int, freeze_norm: bool) -> None:
    """Freeze a transformers text model but its last `unlocked_layers` layers; when any layer is
    unlocked, the parameters registered after the layers (the final norm, a pooler) are too."""
    transformer.requires_grad_(False)
    if not freeze_norm:
        _unfreeze_norms(transformer)
    if unlocked_layers == 0:
        return
    stack = _layer_stack(transformer)
    for layer in stack[len(stack) - unlocked_layers :]:
        layer.requires_grad_(True)
    in_stack = {id(p) for p in stack.parameters()}
    past_stack = False
    for parameter in transformer.parameters():  # registration order: embeddings, layers, final norm
        if id(parameter) in in_stack:
            past_stack = True
        elif past_stack:
            parameter.requires_grad_(True)
