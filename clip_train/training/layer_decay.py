"""Layer-wise learning-rate decay (LLRD) for both towers, as BEiT and OpenCLIP fine-tuning use it.

A fine-tuned tower's early layers hold general features worth keeping, its late ones the pre-training task's;
so each parameter's rate is the optimizer's times `decay ** (top - layer_id)`: the embeddings at layer 0 learn
slowest, each block one factor `decay` faster than the one below, and the projection at the top of its tower
at the full rate. Layer ids, per tower:

    image tower  timm's own grouping of the trunk (`group_matcher(coarse=False)`, the one timm's layer decay
                 uses: stem, patch embedding and tokens 0, then each block in order, a ViT's final norm with
                 its last block); the projection one above the last group, at the top
    text tower   parameters with `embed` in their name 0, `layers.i` / `layer.i` / `blocks.i` / `h.i` at i + 1,
                 anything else (the final norm, pooler, projection) at top = the number of layers + 1

Parameters outside the towers (`logit_scale`, `logit_bias`, a CoCa decoder) keep the full rate.
"""

import re

from timm.models import group_parameters
from torch import nn

TEXT_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|blocks|h)\.(\d+)\.")
TOWERS = ("image_tower", "text_tower")


def _image_layer_ids(tower: nn.Module) -> dict[str, int]:
    """{name within the tower: layer id}: the trunk's timm groups in order, everything else one above them."""
    trunk = tower.trunk
    groups = group_parameters(trunk, trunk.group_matcher(coarse=False))
    ids = {f"trunk.{name}": index for index, names in enumerate(groups.values()) for name in names}
    top = len(groups)
    return {name: ids.get(name, top) for name, _ in tower.named_parameters()}


def _text_layer_ids(tower: nn.Module) -> dict[str, int]:
    """{name within the tower: layer id}: embeddings 0, numbered layers i + 1, the rest at the top."""
    names = [name for name, _ in tower.named_parameters()]
    layers = {int(match.group(1)) for name in names if (match := TEXT_LAYER.search(name))}
    top = len(layers) + 1
    ids = {}
    for name in names:
        match = TEXT_LAYER.search(name)
        ids[name] = int(match.group(1)) + 1 if match else 0 if "embed" in name else top
    return ids


def layer_lr_scales(model: nn.Module, decay: float) -> dict[str, float]:
    """{parameter name: multiple of the optimizer's rate} for every parameter of `model`; `decay` in (0, 1]."""
    if not 0 < decay <= 1:
        raise ValueError(f"optim.layer_decay={decay} must be in (0, 1] (1: no decay; null: off)")
    scales = {name: 1.0 for name, _ in model.named_parameters()}
    for tower_name in TOWERS:
        tower = getattr(model, tower_name, None)
        if tower is None:
            continue
        ids = _image_layer_ids(tower) if hasattr(tower, "trunk") else _text_layer_ids(tower)
        top = max(ids.values())
        scales |= {f"{tower_name}.{name}": decay ** (top - layer) for name, layer in ids.items()}
    return scales
