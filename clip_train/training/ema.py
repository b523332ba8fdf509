"""An exponential moving average (EMA) of the weights, the model validation, evaluation and export then use.

After every optimizer step that is taken (a skipped step leaves it alone), every floating-point entry of the
model's state (parameters and buffers) moves towards the live value:

    average = decay * average + (1 - decay) * weight

starting from the weights at the start of training. Integer buffers are copied. The average is kept in the
weights' dtype on their device. Under DDP every rank holds the same weights after a step, so every rank's
average is the same without any collective, and rank 0 writes it.

In checkpoints it is `ema_state_dict`, keyed as `state_dict` is (`model.<name>`): a resumed run continues the
same average, and `clip_train.load` (so `clip_train.evaluate`, `clip_train.export` and WiSE-FT) reads it in
place of the live weights. Validation swaps it in for the pass (`swapped_in`) and the live weights back after.
"""

from contextlib import contextmanager

import torch
from torch import nn

CHECKPOINT_KEY = "ema_state_dict"


class WeightAverage:
    """The EMA of `model`'s state at `decay` in [0, 1); `average` maps state names to tensors."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0 <= decay < 1:
            raise ValueError(f"optim.ema.decay={decay} must be in [0, 1) (null: no EMA)")
        self.decay = decay
        self.average = {name: value.detach().clone() for name, value in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, value in model.state_dict().items():
            average = self.average[name]
            if average.is_floating_point():
                average.lerp_(value.detach(), 1 - self.decay)
            else:
                average.copy_(value)

    @contextmanager
    def swapped_in(self, model: nn.Module):
        """Within the block `model` holds the average; its own weights come back after."""
        state = model.state_dict()
        live = {name: value.detach().clone() for name, value in state.items()}
        with torch.no_grad():
            for name, value in state.items():
                value.copy_(self.average[name])
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, value in state.items():
                    value.copy_(live[name])

    def checkpoint_state(self, prefix: str = "model.") -> dict[str, torch.Tensor]:
        return {f"{prefix}{name}": value for name, value in self.average.items()}

    def load_checkpoint_state(self, state: dict[str, torch.Tensor], prefix: str = "model.") -> None:
        """Take a checkpoint's `ema_state_dict`; a missing or extra name is an error that names it."""
        names = {name.removeprefix(prefix) for name in state}
        if names != self.average.keys():
            missing, extra = sorted(self.average.keys() - names), sorted(names - self.average.keys())
            raise ValueError(
                f"the checkpoint's {CHECKPOINT_KEY} does not fit the model (missing {missing[:3]}, extra {extra[:3]})"
            )
        for name, average in self.average.items():
            average.copy_(state[f"{prefix}{name}"])
