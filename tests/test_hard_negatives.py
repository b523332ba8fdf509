"""Text hard negatives in training: both losses against naive per-pair references, and exact under
2-process gloo DDP (full-batch gradients of every parameter); exact under optim.accumulate: test_objectives.py."""

import math
from contextlib import nullcontext

import pytest
import torch
from gloo import on_gloo_ranks
from models import small_encoder
from test_accumulation import make_batch

from clip_train.accumulation import contrastive_backward
from clip_train.model.outputs import TrainingOutputs
from clip_train.objectives import InfoNCE, SigLip, infonce_loss, siglip_loss

K = 3


def unit(*shape: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(*shape, generator=generator, dtype=torch.float64), dim=-1)


def validity(rows: int) -> torch.Tensor:
    """(rows, K): row r keeps K - r % K slots, so some rows have empty slots and one has none."""
    return torch.tensor([[slot < K - row % K for slot in range(K)] for row in range(rows)])


def naive_negclip(image, text, negatives, valid, logit_scale):
    """Loop over pairs: image i against every caption and its own valid negatives; captions against images."""
    scale, n = logit_scale.exp(), image.shape[0]
    total = 0.0
    for i in range(n):
        own = [scale * torch.dot(image[i], negatives[i, s]) for s in range(K) if valid[i, s]]
        image_scores = torch.stack([scale * torch.dot(image[i], text[j]) for j in range(n)] + own)
        text_scores = torch.stack([scale * torch.dot(text[i], image[j]) for j in range(n)])
        total = total - (image_scores[i] - torch.logsumexp(image_scores, 0))
        total = total - (text_scores[i] - torch.logsumexp(text_scores, 0))
    return total / (2 * n)


def naive_siglip(image, text, negatives, valid, logit_scale, logit_bias):
    """Every pair -log σ(±z), and every valid negative of image i one more pair with label -1; over the images."""
    total = 0.0
    for i in range(image.shape[0]):
        for j in range(text.shape[0]):
            z = logit_scale.exp() * torch.dot(image[i], text[j]) + logit_bias
            total = total - torch.nn.functional.logsigmoid(z if i == j else -z)
        for s in range(K):
            if valid[i, s]:
                z = logit_scale.exp() * torch.dot(image[i], negatives[i, s]) + logit_bias
                total = total - torch.nn.functional.logsigmoid(-z)
    return total / image.shape[0]


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("objective", ["infonce", "siglip"])
def test_losses_equal_naive_references(batch, objective):
    image, text = unit(batch, 5, seed=0).requires_grad_(), unit(batch, 5, seed=1).requires_grad_()
    negatives, valid = unit(batch, K, 5, seed=2).requires_grad_(), validity(batch)
    scale = torch.tensor(math.log(10), dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)
    if objective == "infonce":
        inputs = (image, text, negatives, scale)
        loss = infonce_loss(image, text, scale, negative_text_features=negatives, negative_valid=valid)
        reference = naive_negclip(image, text, negatives, valid, scale)
    else:
        inputs = (image, text, negatives, scale, bias)
        loss = siglip_loss(image, text, scale, bias, negative_text_features=negatives, negative_valid=valid)
        reference = naive_siglip(image, text, negatives, valid, scale, bias)
    torch.testing.assert_close(loss, reference)
    for got, want in zip(torch.autograd.grad(loss, inputs), torch.autograd.grad(reference, inputs)):
        torch.testing.assert_close(got, want)
    if batch == 1:  # one pair with two valid negatives: InfoNCE is no longer 0
        assert float(loss.detach()) > 0


def test_a_mismatched_setting_is_refused():
    outputs = TrainingOutputs(unit(2, 4, seed=0), unit(2, 4, seed=1), scalars={"logit_scale": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="loss.text_hard_negatives=2 but the batch has no hard negatives"):
        InfoNCE(2)(outputs)
    outputs.negative_text_features, outputs.negative_valid = unit(2, K, 4, seed=2), validity(2)
    with pytest.raises(ValueError, match="expects k=2"):
        InfoNCE(2)(outputs)


def batch_with_negatives(size: int = 8, seed: int = 0) -> dict:
    """test_accumulation's batch plus K negative captions per caption, some slots empty."""
    batch = make_batch(size, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    mask = torch.ones(size, K, 12, dtype=torch.long)
    mask[:, :, 6:] = 0
    ids = torch.randint(1, 50, (size, K, 12), generator=generator)
    return batch | {"negative_input_ids": ids, "negative_attention_mask": mask, "negative_valid": validity(size)}


def make_model(objective: str):
    torch.manual_seed(0)
    model = small_encoder().double()
    if objective == "siglip":
        model.register_parameter("logit_bias", torch.nn.Parameter(torch.tensor(-2.0, dtype=torch.float64)))
    return model


LOSSES = {"infonce": InfoNCE, "siglip": SigLip}


def gradients(objective: str, batch: dict, micro_batches: int, k: int = K) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model = make_model(objective)
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
