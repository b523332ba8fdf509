"""What a model's training forward hands to the objective: named per-sample outputs and named scalars.

Every tensor field is per sample, its first dimension the batch, so the outputs of micro-batches
join into those of their batch by concatenating each field (`clip_train.training.accumulation`) and any
objective that is a function of them stays exact under accumulation. A field the model or the
batch does not give is None. A new kind of output is one more optional field here, filled by the
model that has it and read by the objectives that need it (`clip_train.objectives`).
"""

from dataclasses import dataclass, field, fields

import torch


@dataclass
class TrainingOutputs:
    """One batch's training outputs (B samples).

    image_features, text_features: (B, D), L2-normalised.
    caption_nll: (B,) each caption's mean next-token NLL (a captioning model, `CoCa`).
    negative_text_features: (B, k, D) L2-normalised features of each image's k text hard negatives, and
    negative_valid: (B, k) bool, the slots the data workers could fill (a batch with negatives).
    teacher_image_features, teacher_text_features: (B, D') L2-normalised, a frozen teacher's features of the same
        batch, which a distillation objective makes itself (`Objective.side_outputs`); D' is the teacher's.
    scalars: the model's shared scalar parameters by name (`logit_scale`, `logit_bias` when it has one);
        not per sample, so never concatenated.
    """

    image_features: torch.Tensor
    text_features: torch.Tensor
    caption_nll: torch.Tensor | None = None
    negative_text_features: torch.Tensor | None = None
    negative_valid: torch.Tensor | None = None
    teacher_image_features: torch.Tensor | None = None
    teacher_text_features: torch.Tensor | None = None
    scalars: dict[str, torch.Tensor] = field(default_factory=dict)


PER_SAMPLE_FIELDS = tuple(f.name for f in fields(TrainingOutputs) if f.name != "scalars")
