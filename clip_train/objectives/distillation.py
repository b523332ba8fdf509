"""Distillation from a frozen teacher, as OpenCLIP's `--distill-model`: the student's image-text logits learn the
teacher's on the same batch.

    python -m clip_train loss=distill loss.terms.distill_loss.teacher=PATH

For each image row i of the batch, the teacher's logits over the batch's texts, softmaxed, are the target of the
student's: the cross-entropy -Σ_j softmax(teacher_i)_j · log_softmax(student_i)_j, averaged over the rows; the same
for each text row over the images, and the two directions averaged. This is KL(teacher ‖ student) plus the
teacher's entropy, a constant, so its gradient is the KL's. Each side's logits are at its own temperature (the
teacher's is fixed). `configs/loss/distill.yaml` adds it to InfoNCE: loss = contrastive + weight × distillation.

Under DDP, as InfoNCE, the local rows are scored against the gathered columns of the global batch (the
student's gathered with gradient), so the ranks' mean is the full batch's loss. The teacher's features are a
side output (`Objective.side_outputs`), made once per micro-batch without gradient, so accumulation is exact.

The teacher is held in a `Teacher`, a plain object rather than a submodule: it is in no state dict (never in a
checkpoint), not wrapped by DDP, and Lightning's `train()` never reaches it, so it stays in eval mode.
`clip_train.training.teacher` loads it from any source and places it beside the student.
"""

import torch
from torch import nn

from clip_train.distributed import gather_with_grad
from clip_train.model.outputs import TrainingOutputs
from clip_train.objectives.objective import Objective


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """(N, M), (N, M) -> (): mean over rows of -Σ_j softmax(teacher)_j log_softmax(student)_j."""
    return -(teacher_logits.softmax(dim=1) * student_logits.log_softmax(dim=1)).sum(dim=1).mean()


def distillation_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    teacher_image_features: torch.Tensor,
    teacher_text_features: torch.Tensor,
    teacher_logit_scale: float,
) -> torch.Tensor:
    """The student's (B, D) features at exp(`logit_scale`) ((1,) or ()) against the teacher's (B, D') at the fixed
    `teacher_logit_scale` (already exponentiated), both L2-normalised: the mean of the image→text and text→image
    `soft_cross_entropy`. Computed in at least float32, as InfoNCE."""
    with torch.autocast(device_type=image_features.device.type, enabled=False):
        dtype = torch.promote_types(image_features.dtype, torch.float32)
        image, text = image_features.to(dtype), text_features.to(dtype)
        teacher_image, teacher_text = teacher_image_features.to(dtype), teacher_text_features.to(dtype)
        scale = logit_scale.to(dtype).exp()
        per_image = scale * image @ gather_with_grad(text).T
        per_text = scale * text @ gather_with_grad(image).T
        teacher_per_image = teacher_logit_scale * teacher_image @ gather_with_grad(teacher_text).T
        teacher_per_text = teacher_logit_scale * teacher_text @ gather_with_grad(teacher_image).T
        return (soft_cross_entropy(per_image, teacher_per_image) + soft_cross_entropy(per_text, teacher_per_text)) / 2


class Teacher:
    """A frozen dual encoder (eval mode, no gradients) and what it needs to read the student's batches.

    model: a `DualEncoder` whose `forward(batch)` gives (image, text) features.
    pixel_scale, pixel_shift: (1, 3, 1, 1) each, or None: the affine map from the data's normalised pixels to the
        teacher's normalisation (another mean and std), `teacher = student · scale + shift`.
    logit_scale: exp of the teacher's `logit_scale`, read once here, before any sharding.
    """

    def __init__(self, model: nn.Module, pixel_scale: torch.Tensor | None = None, pixel_shift: torch.Tensor | None = None):
        self.model = model.eval().requires_grad_(False)
        self.pixel_scale, self.pixel_shift = pixel_scale, pixel_shift
        self.logit_scale = float(model.logit_scale.detach().reshape(()).exp())

    @torch.no_grad()
    def side_outputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A (micro-)batch -> {"teacher_image_features", "teacher_text_features"}, (B, D') each."""
        images = batch["image"]
        if self.pixel_scale is not None:
            images = images * self.pixel_scale.to(images) + self.pixel_shift.to(images)
        dtype = self.model.logit_scale.dtype  # a model converted whole (bf16-true) takes its own dtype
        inputs = {"image": images.to(dtype), "input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        image_features, text_features = self.model(inputs)
        if hasattr(self.model, "reshard"):  # FSDP2 keeps the root's parameters gathered after forward for the backward
            self.model.reshard()  # that follows; none follows here, so the teacher gives them back
        return {"teacher_image_features": image_features, "teacher_text_features": text_features}


class Distillation(Objective):
    """`distillation_loss` of the model's features against a teacher's, as {"loss": ...}.

    teacher: the teacher's source (a clip_train checkpoint or export, or any `model.init_from` source), loaded by
        the trainer (`clip_train.training.teacher.attach_teachers`) into `self.teacher`.
    """

    reads = frozenset({"image_features", "text_features"})
    scalars = frozenset({"logit_scale"})

    def __init__(self, teacher: str):
        super().__init__()
        self.source = teacher
        self.teacher: Teacher | None = None

    def _attached(self) -> Teacher:
        if self.teacher is None:
            raise RuntimeError(
                f"distillation from {self.source}: no teacher loaded (clip_train.training.teacher.attach_teachers)"
            )
        return self.teacher

    def side_outputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self._attached().side_outputs(batch)

    def forward(self, outputs: TrainingOutputs) -> dict[str, torch.Tensor]:
        if outputs.teacher_image_features is None:
            raise ValueError("distillation needs the teacher's features in the outputs (from side_outputs)")
        loss = distillation_loss(
            outputs.image_features,
            outputs.text_features,
            outputs.scalars["logit_scale"],
            outputs.teacher_image_features,
            outputs.teacher_text_features,
            self._attached().logit_scale,
        )
        return {"loss": loss}


def teachers(objective: nn.Module) -> list[Teacher]:
    """The loaded teachers of every `Distillation` term in `objective` (a `WeightedSum` holds them as terms)."""
    return [term.teacher for term in objective.modules() if isinstance(term, Distillation) and term.teacher is not None]
