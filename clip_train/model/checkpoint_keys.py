"""Checkpoint entries that mean the same weight under another name or shape: transformers 4 and 5 keys,
and the temperature stored 0-d before issue 23.

transformers 5 dropped the `text_model.` level inside `CLIPTextModel`: the same text tower's
weights are `text_tower.transformer.text_model.encoder.layers.0...` in a checkpoint written
under 4.x and `text_tower.transformer.encoder.layers.0...` under 5.x. A checkpoint from either
must load under either, so keys are matched to the running model's by their form without that
level. Nothing else is renamed: a key that matches no weight stays as it is, and the load names it.

`logit_scale` and `logit_bias` were 0-d parameters until issue 23; they are (1,) now, since FSDP
shards parameters along their first dimension and refuses 0-d ones. A one-element tensor is given
the running model's shape for the same key, so a checkpoint or export of either layout loads; a
resumed run's optimizer moments of those parameters are made (1,) likewise (`fit_0d_optimizer_moments`).
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


def fit_one_element_shapes(state: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor]) -> dict:
    """`state` with each one-element tensor reshaped to the `model_state` entry of its key ((), (1,) or (1, 1))."""
    fitted = dict(state)
    for key, value in state.items():
        target = model_state.get(key)
        if target is not None and value.numel() == target.numel() == 1 and value.shape != target.shape:
            fitted[key] = value.reshape(target.shape)
    return fitted


def match_model_state(state: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` renamed (`match_model_keys`) and reshaped (`fit_one_element_shapes`) to fit `model_state`."""
    return fit_one_element_shapes(match_model_keys(state, model_state), model_state)


def fit_0d_optimizer_moments(optimizer_states: list[dict]) -> None:
    """Make every 0-d per-parameter optimizer tensor but `step` (AdamW's moments of a 0-d `logit_scale` or
    `logit_bias`: the only 0-d parameters there were) (1,), in place, so it matches the parameter it updates."""
    for optimizer in optimizer_states:
        for state in optimizer.get("state", {}).values():
            for name, value in state.items():
                if name != "step" and isinstance(value, torch.Tensor) and value.dim() == 0:
                    state[name] = value.reshape(1)
