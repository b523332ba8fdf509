"""A folder written by `python -m clip_train.export` as a `model.init_from` source: fine-tune your own model.

The export holds the recipe (`clip_train_config.json`: the architecture as a Hydra config, rebuildable
without weight sources), the weights (`model.safetensors`, keyed as our `DualEncoder` names them) and the
tokenizer files, which is everything a `PretrainedCLIP` carries; so a warm start from one of your runs is
`model=clip_pretrained model.init_from=EXPORT` (FLYP in `configs/experiment/flyp.yaml` starts this way).
"""

import os

from safetensors.torch import load_file

from clip_train.inference import WEIGHTS_FILE
from clip_train.interop.pretrained import PretrainedCLIP
from clip_train.model.weight_sources import without_weight_sources
from clip_train.recipe import RECIPE_FILE, Recipe


def is_clip_train_export(folder: str) -> bool:
    """Whether `folder` holds an export of ours (its recipe file and weights)."""
    return all(os.path.isfile(os.path.join(folder, name)) for name in (RECIPE_FILE, WEIGHTS_FILE))


def read_clip_train_export(folder: str) -> PretrainedCLIP:
    """The architecture, weights and tokenizer folder of an export."""
    recipe = Recipe.read(folder)
    return PretrainedCLIP(without_weight_sources(recipe.model), load_file(os.path.join(folder, WEIGHTS_FILE)), folder)
