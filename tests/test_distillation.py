"""Distillation from a frozen teacher (`loss=distill`): the loss against a naive loop and OpenCLIP's DistillClipLoss,
exact under accumulation and on 2 gloo ranks, gradients on the student only, the teacher outside every state dict and
checkpoint, loaded from an export or an init_from source and checked against the student's inputs, and a 2-process
FSDP run with the teacher sharded."""

import json
import os
import subprocess
import sys
from contextlib import nullcontext
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from faults import read_lines
from gloo import on_gloo_ranks
from helpers import caption_tokenizer, clip_model, float64_encoder, make_batch, small_encoder
from hf_clip_models import clip_tokenizer, save_small_clip
from open_clip.loss import DistillClipLoss

from clip_train.checkpoint_file import read_checkpoint
from clip_train.export import export
from clip_train.interop import init_from
from clip_train.objectives import Distillation, InfoNCE, WeightedSum
from clip_train.objectives.distillation import Teacher, distillation_loss
from clip_train.training.accumulation import contrastive_backward
from clip_train.training.module import ClipModule
from clip_train.training.teacher import attach_teachers, load_teacher

TESTS = os.path.dirname(__file__)


def unit_rows(rows: int, dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(rows, dim, generator=generator, dtype=torch.float64), dim=-1)


def naive_distillation(image, text, logit_scale, teacher_image, teacher_text, teacher_scale) -> torch.Tensor:
    """Element by element: for each row, -Σ_j p_teacher(j) log p_student(j), with each softmax written out."""
    scale, n = logit_scale.reshape(()).exp(), image.shape[0]

    def row_loss(student_row: list, teacher_row: list) -> torch.Tensor:
        teacher_total = sum(torch.exp(t) for t in teacher_row)
        student_log_total = torch.log(sum(torch.exp(s) for s in student_row))
        return -sum(torch.exp(t) / teacher_total * (s - student_log_total) for s, t in zip(student_row, teacher_row))

    def direction(rows, columns, teacher_rows, teacher_columns) -> torch.Tensor:
        return sum(
            row_loss([scale * torch.dot(rows[i], columns[j]) for j in range(n)],
                     [teacher_scale * torch.dot(teacher_rows[i], teacher_columns[j]) for j in range(n)])
            for i in range(n)
        ) / n  # fmt: skip

    return (direction(image, text, teacher_image, teacher_text) + direction(text, image, teacher_text, teacher_image)) / 2


def test_the_loss_equals_a_naive_loop_and_open_clips_distill_clip_loss():
    image, text, teacher_image, teacher_text = unit_rows(6, 5, 0), unit_rows(6, 5, 1), unit_rows(6, 7, 2), unit_rows(6, 7, 3)
    logit_scale, teacher_scale = torch.tensor([2.3], dtype=torch.float64), 30.0
    ours = distillation_loss(image, text, logit_scale, teacher_image, teacher_text, teacher_scale)
    naive = naive_distillation(image, text, logit_scale, teacher_image, teacher_text, teacher_scale)
    torch.testing.assert_close(ours, naive, rtol=1e-12, atol=1e-12)
    theirs = DistillClipLoss()(image, text, logit_scale.exp(), teacher_image, teacher_text, teacher_scale, output_dict=True)
    torch.testing.assert_close(ours, theirs["distill_loss"], rtol=1e-12, atol=1e-12)


def _distilled(weight: float = 0.5) -> tuple[WeightedSum, Teacher]:
    """InfoNCE + `weight` × distillation from a float64 teacher of another seed."""
    torch.manual_seed(1)
    teacher = Teacher(small_encoder().double())
    distillation = Distillation(teacher="a teacher made in the test")
    distillation.teacher = teacher
    objective = WeightedSum({"contrastive_loss": InfoNCE(), "distill_loss": distillation},
                            {"contrastive_loss": 1.0, "distill_loss": weight})  # fmt: skip
    return objective, teacher


def _gradients(model, objective, batch, micro_batches: int) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    contrastive_backward(model, objective, batch, micro_batches, backward=lambda loss: loss.backward(), no_sync=nullcontext)
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def test_accumulation_is_exact_and_only_the_student_gets_gradients():
    model, (objective, teacher) = float64_encoder("infonce"), _distilled()
    batch = make_batch(8)
    whole, accumulated = _gradients(model, objective, batch, 1), _gradients(model, objective, batch, 2)
    for name in whole:
        torch.testing.assert_close(accumulated[name], whole[name], msg=name)
    assert not teacher.model.training and all(p.grad is None and not p.requires_grad for p in teacher.model.parameters())
    # the distillation term moved the gradients: InfoNCE alone gives others
    model.zero_grad(set_to_none=True)
    InfoNCE()(model.training_forward(batch))["loss"].backward()
    assert not torch.allclose(model.image_tower.projection.weight.grad, whole["image_tower.projection.weight"])
    # and the total is contrastive + weight × distillation of the same outputs
    outputs = replace(model.training_forward(batch), **teacher.side_outputs(batch))
    losses = objective(outputs)
    torch.testing.assert_close(losses["loss"], losses["contrastive_loss"] + 0.5 * losses["distill_loss"])


def test_the_teacher_is_in_no_state_dict_and_stays_in_eval_mode():
    objective, teacher = _distilled()
    module = ClipModule(small_encoder().double(), objective, optimizer=None, scheduler=None)
    module.train()
    assert not teacher.model.training
    assert all(key.startswith("model.") for key in module.state_dict())
    assert not {id(p) for p in teacher.model.parameters()} & {id(p) for p in module.parameters()}


def _rank_gradients(rank: int, world: int) -> dict[str, torch.Tensor]:
    """This rank's half of the batch through the distillation objective, gradients averaged over ranks as DDP does."""
    model, (objective, _) = float64_encoder("infonce"), _distilled()
    batch = make_batch(8)
    local = {key: value[rank * 4 : (rank + 1) * 4] if value.ndim else value for key, value in batch.items()}
    grads = _gradients(model, objective, local, 2)
    for grad in grads.values():
        torch.distributed.all_reduce(grad)
        grad /= world
    return grads


@pytest.mark.slow
def test_two_gloo_ranks_equal_the_full_batch(tmp_path):
    model, (objective, _) = float64_encoder("infonce"), _distilled()
    expected = _gradients(model, objective, make_batch(8), 1)
    for grads in on_gloo_ranks(_rank_gradients, 2, tmp_path):
        for name in expected:
            torch.testing.assert_close(grads[name], expected[name], msg=name)


def test_a_teacher_from_an_export_reads_the_students_pixels_in_its_own_normalisation(tmp_path):
    source = clip_model({"model_name": "test_vit", "patch_size": 8}, "quick_gelu", 32)
    source.recipe = replace(source.recipe, image_mean=(0.5, 0.4, 0.3), image_std=(0.2, 0.25, 0.3))
    export(source, str(tmp_path / "teacher"))
    distillation = Distillation(teacher=str(tmp_path / "teacher"))
    data_mean, data_std = (0.48, 0.46, 0.41), (0.27, 0.26, 0.28)
    assert attach_teachers(distillation, source.tokenizer, 32, 12, data_mean, data_std) == 1
    pixels = torch.rand(3, 3, 32, 32)
    as_data = (pixels - torch.tensor(data_mean).view(1, 3, 1, 1)) / torch.tensor(data_std).view(1, 3, 1, 1)
    as_teacher = (pixels - torch.tensor((0.5, 0.4, 0.3)).view(1, 3, 1, 1)) / torch.tensor((0.2, 0.25, 0.3)).view(1, 3, 1, 1)
    tokens = source.tokenize(["a small red square", "a big blue circle", "a small green photo"])
    features = distillation.side_outputs({"image": as_data, **tokens})
    with torch.no_grad():
        expected = source.encode_pixels(as_teacher)
    torch.testing.assert_close(features["teacher_image_features"], expected, rtol=0, atol=1e-5)

    with pytest.raises(ValueError, match="another tokenizer than data.tokenizer"):
        attach_teachers(distillation, clip_tokenizer(), 32, 12, data_mean, data_std)
    with pytest.raises(ValueError, match="takes 32-px images but the student's batches are 64 px"):
        attach_teachers(distillation, caption_tokenizer(), 64, 12, data_mean, data_std)


def test_a_teacher_from_an_init_from_source(tmp_path):
    save_small_clip(str(tmp_path / "clip"))
    model, tokenizer, mean, std = load_teacher(str(tmp_path / "clip"))
    source = init_from(str(tmp_path / "clip")).state_dict
    weights = model.state_dict()
    assert source.keys() == weights.keys() and all(torch.equal(weights[k], source[k]) for k in source)
    assert tokenizer("a red square")["input_ids"] == [522, 320, 513, 521, 523] and mean is None and std is None


@pytest.mark.slow
def test_distillation_under_fsdp_shards_the_teacher_and_leaves_it_out_of_the_checkpoint(trained_checkpoint, tmp_path):
    """The teacher is the `trained_checkpoint` fixture's run; the student trains on the same shards (so the same learnt
    tokenizer) on 2 gloo processes under trainer=fsdp with 2 micro-batches."""
    shards = os.path.join(os.path.dirname(trained_checkpoint), "..", "..", "shards", "train-{00000..00003}.tar")
    command = [sys.executable, "-m", "clip_train", "data=webdataset", f"data.train_shards='{shards}'", "data.batch_size=8",
               "data.num_workers=0", "model=test", "trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=2",
               "trainer.max_steps=2", "trainer.limit_val_batches=0", "optim.accumulate=2", "eval=none", "logger=[]",
               "trainer.enable_progress_bar=false", "loss=distill", f"loss.terms.distill_loss.teacher={trained_checkpoint}",
               "loss.weights.distill_loss=0.5", f"hydra.run.dir={tmp_path}/run",
               "+callbacks.teacher._target_=faults.TeacherState",
               f"+callbacks.teacher.path={tmp_path}/teacher.jsonl"]  # fmt: skip
    env = os.environ | {"PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train/loss"] == pytest.approx(metrics["train/contrastive_loss"] + 0.5 * metrics["train/distill_loss"])
    states = read_lines(tmp_path / "teacher.jsonl")
    assert sorted((s["rank"], s["sharded"], s["training"], s["trainable"]) for s in states) == [
        (0, True, False, False), (0, True, False, False), (1, True, False, False), (1, True, False, False)]  # fmt: skip
    student = read_checkpoint(str(tmp_path / "run" / "checkpoints" / "last.ckpt"), "test")["state_dict"]
    teacher = read_checkpoint(trained_checkpoint, "test")["state_dict"]
    assert student.keys() == teacher.keys()  # the same architecture, and nothing of the teacher beside it
