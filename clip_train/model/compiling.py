"""`compile=true`: torch.compile a model in place, so that parameter names, and so checkpoints, stay the eager ones.

Two entry points run a model, and both are compiled:
- `training_forward`, what a training step runs. CoCa's reaches its towers through methods
  (`ImageTower.forward_tokens`, the text transformer), not through the towers' `__call__`, so compiling the
  towers alone left its whole step eager; the method itself is compiled, with the towers inlined into its graph.
- the towers' `__call__`, which validation and the evaluation tasks run (`encode_image`, `encode_text`).

The compiled `training_forward` is bound to the model as a method object, so `copy.deepcopy(model)` (the FLOP
count's meta-device copy, `clip_train.training.flops`) gets one bound to the copy, not to this model.
"""

import types

import torch

from clip_train.model.dual_encoder import DualEncoder


def compile_model(model: DualEncoder, **options) -> None:
    """Compile `model`'s training forward and both towers in place; `options` go to `torch.compile`
    (e.g. `backend`, `mode`). Nothing is compiled until the first call."""
    model.image_tower.compile(**options)
    model.text_tower.compile(**options)
    model.training_forward = types.MethodType(torch.compile(type(model).training_forward, **options), model)
