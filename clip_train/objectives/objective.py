"""The objective contract: named model outputs in, named loss terms out, checked against the model up front.

An objective maps a batch's `TrainingOutputs` (per-sample fields and the model's scalars) to
{"loss": the total to minimise, <term>: a named part worth logging, ...}; the training
step backpropagates "loss" and logs every other key as `train/<term>`. It declares what it reads,
so a model and an objective that do not fit are refused before training, not after a silent run.
"""

import torch
from torch import nn

from clip_train.model import DualEncoder
from clip_train.model.outputs import TrainingOutputs


class Objective(nn.Module):
    """Base of the training objectives.

    reads: the `TrainingOutputs` fields it needs from every model (text hard negatives are the batch's
        business and are checked when they arrive, `clip_train.objectives.hard_negatives`).
    scalars: the model scalars it reads: `logit_scale`, `logit_bias`.
    """

    reads: frozenset[str] = frozenset()
    scalars: frozenset[str] = frozenset()

    def forward(self, outputs: TrainingOutputs) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def side_outputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-sample `TrainingOutputs` fields the objective makes itself from a (micro-)batch, without gradient and
        outside the model (a distillation teacher's features, `clip_train.objectives.distillation`); most make none."""
        return {}


def check_objective(model: DualEncoder, objective: Objective) -> None:
    """Refuse a model and an objective that do not fit, with the setting to change.

    Every output the model gives must be read (a caption NLL nobody trains on is a silent mistake,
    and its decoder would be an unused parameter under DDP), every output read must be given, and
    the model has a `logit_bias` parameter exactly when the objective reads one (an unused one
    breaks DDP; `loss=siglip` creates it through `model.init_logit_bias`).
    """
    name, model_name = type(objective).__name__, type(model).__name__
    missing = sorted(objective.reads - model.output_fields)
    if missing:
        raise ValueError(f"{name} needs the model outputs {missing}, which {model_name} does not give: pick another model")
    ignored = sorted(model.output_fields - objective.reads)
    if ignored:
        raise ValueError(
            f"{model_name} gives {ignored} but {name} does not read it: pick an objective that does "
            "(a CoCa model, model=coca_*: loss=coca, or loss=coca_siglip)"
        )
    uses_bias = "logit_bias" in objective.scalars
    if uses_bias and model.logit_bias is None:
        raise ValueError(f"{name} needs a logit bias: set model.init_logit_bias (loss=siglip sets -10)")
    if not uses_bias and model.logit_bias is not None:
        raise ValueError(
            f"model.init_logit_bias is set but {name} never uses a bias, which would leave an "
            "unused parameter under DDP: set model.init_logit_bias=null"
        )
