"""Checkpoint keys that mean the same weight under transformers 4 and 5.

transformers 5 dropped the `text_model.` level inside `CLIPTextModel`: the same text tower's
weights are `text_tower.transformer.text_model.encoder.layers.0...` in a checkpoint written
under 4.x and `text_tower.transformer.encoder.layers.0...` under 5.x. A checkpoint from either
must load under either, so keys are matched to the running model's by their form without that
level. Nothing else is renamed: a key that matches no weight stays as it is, and the load names it.
"""

from collections.abc import Iterable, Mapping

import torch

LEVEL_DROPPED_IN_TRANSFORMERS_5 = ".text_model."


def _without_level(key: str) -> str:
    return key.replace(LEVEL_DROPPED_IN_TRANSFORMERS_5, ".")


def match_model_keys(state: Mapping[str, torch.Tensor], model_keys: Iterable[str]) -> dict[str, torch.Tensor]:
    """`state` with each key renamed to the `model_keys` entry it stands for across transformers versions."""
    model_keys = set(model_keys)
    by_form = {_without_level(key): key for key in model_keys}
    return {key if key in model_keys else by_form.get(_without_level(key), key): value for key, value in state.items()}
