"""A model config that rebuilds the architecture without reading any pretrained-weight source.

A training config may start a tower from weights elsewhere: a timm trunk with `pretrained: true` (timm's
cache, the hub, or a local file in `pretrained_cfg_overlay.file`, as `experiment=lit` does) or a
`PretrainedTextTower` reading a transformers folder or hub name. A checkpoint or export already holds
every weight, so rebuilding from it must not need those sources: they may be gone, or on another
machine. `architecture_config` is what the recipe stores (`clip_train.recipe`): weight sources off,
and each transformers text tower's whole config carried inline, so even its `config.json` is not read.
`without_weight_sources` does what it can for a config alone (an older checkpoint's recipe, a resumed
run's model): weight sources off; a transformers text tower named by a folder then still reads that
folder's `config.json`, but no weights.
"""

import copy

from torch import nn

IMAGE_TOWER = "clip_train.model.ImageTower"
PRETRAINED_TEXT_TOWER = "clip_train.model.PretrainedTextTower"
TOWERS = ("image_tower", "text_tower")


def without_weight_sources(model_config: dict) -> dict:
    """A copy of `model_config` (a resolved model config, plain dicts) whose towers start from random weights."""
    config = copy.deepcopy(model_config)
    for name in TOWERS:
        tower = config.get(name)
        if not isinstance(tower, dict):
            continue
        if tower.get("_target_") == IMAGE_TOWER:
            tower["pretrained"] = False
            tower.pop("pretrained_cfg_overlay", None)
        elif tower.get("_target_") == PRETRAINED_TEXT_TOWER:
            tower["pretrained"] = False
    return config


def architecture_config(model_config: dict, model: nn.Module) -> dict:
    """`without_weight_sources(model_config)` with each `PretrainedTextTower`'s transformers config (as a
    dict) inline under `transformers_config`, taken from the built `model`, so rebuilding reads no file."""
    config = without_weight_sources(model_config)
    for name in TOWERS:
        tower = config.get(name)
        if isinstance(tower, dict) and tower.get("_target_") == PRETRAINED_TEXT_TOWER:
            tower["transformers_config"] = getattr(model, name).transformer.config.to_dict()
    return config
