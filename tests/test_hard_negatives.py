"""Text hard negatives in training: both losses against naive per-pair references, and exact under
2-process gloo DDP (full-batch gradients of every parameter); exact under optim.accumulate: test_objectives.py."""

import math
from contextlib import nullcontext

import pytest
import torch
from gloo import on_gloo_ranks
from helpers import (
    K,
    batch_with_negatives,
    float64_encoder,
    naive_negclip,
    naive_siglip_with_negatives,
    negative_valid,
)

from clip_train.model.outputs import TrainingOutputs
from clip_train.objectives import InfoNCE, SigLip, infonce_loss, siglip_loss
from clip_train.training.accumulation import contrastive_backward


def unit(*shape: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(*shape, generator=generator, dtype=torch.float64), dim=-1)


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("objective", ["infonce", "siglip"])
def test_losses_equal_naive_references(batch, objective):
    image, text = unit(batch, 5, seed=0).requires_grad_(), unit(batch, 5, seed=1).requires_grad_()
    negatives, valid = unit(batch, K, 5, seed=2).requires_grad_(), negative_valid(batch)
    scale = torch.tensor(math.log(10), dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)
    if objective == "infonce":
        inputs = (image, text, negatives, scale)
        loss = infonce_loss(image, text, scale, negative_text_features=negatives, negative_valid=valid)
        reference = naive_negclip(image, text, negatives, valid, scale)
    else:
        inputs = (image, text, negatives, scale, bias)
        loss = siglip_loss(image, text, scale, bias, negative_text_features=negatives, negative_valid=valid)
        reference = naive_siglip_with_negatives(image, text, negatives, valid, scale, bias)
    torch.testing.assert_close(loss, reference)
    for got, want in zip(torch.autograd.grad(loss, inputs), torch.autograd.grad(reference, inputs)):
        torch.testing.assert_close(got, want)
    if batch == 1:  # one pair with two valid negatives: InfoNCE is no longer 0
        assert float(loss.detach()) > 0


def test_a_mismatched_setting_is_refused():
    outputs = TrainingOutputs(unit(2, 4, seed=0), unit(2, 4, seed=1), scalars={"logit_scale": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="loss.text_hard_negatives=2 but the batch has no hard negatives"):
        InfoNCE(2)(outputs)
    outputs.negative_text_features, outputs.negative_valid = unit(2, K, 4, seed=2), negative_valid(2)
    with pytest.raises(ValueError, match="expects k=2"):
        InfoNCE(2)(outputs)


LOSSES = {"infonce": InfoNCE, "siglip": SigLip}


def gradients(objective: str, batch: dict, micro_batches: int, k: int = K) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model = float64_encoder(objective)
    loss = contrastive_backward(model, LOSSES[objective](k), batch, micro_batches, lambda x: x.backward(), nullcontext)
    return loss["loss"], {name: p.grad.clone() for name, p in model.named_parameters()}


def _rank_gradients(rank: int, world: int, objective: str, micro_batches: int) -> tuple:
    batch = batch_with_negatives()
    rows = batch["image"].shape[0] // world
    local = {key: value[rank * rows : (rank + 1) * rows] for key, value in batch.items() if key != "bad_samples"}
    loss, grads = gradients(objective, local | {"bad_samples": torch.tensor(0)}, micro_batches)
    for grad in grads.values():  # what DDP does: average the gradients over ranks
        torch.distributed.all_reduce(grad)
        grad /= world
    torch.distributed.all_reduce(loss)
    return loss / world, grads


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["infonce", "siglip"])
def test_two_processes_equal_the_full_batch(tmp_path, objective):
    """2 gloo ranks × 2 micro-batches of 2 pairs (each with its negatives) against one process with all 8."""
    full_loss, full = gradients(objective, batch_with_negatives(), 1)
    for loss, grads in on_gloo_ranks(_rank_gradients, 2, tmp_path, objective, 2):
        torch.testing.assert_close(loss, full_loss)
        for name in full:
            torch.testing.assert_close(grads[name], full[name], msg=name)
