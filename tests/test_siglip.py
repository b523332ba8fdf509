"""SigLIP: the sigmoid loss against a naive per-pair reference, exact accumulation, the model's bias
and clamp (the ring under several processes: tests/test_siglip_ring.py)."""

import math
from contextlib import nullcontext

import pytest
import torch
from models import small_encoder
from test_accumulation import make_batch

from clip_train.accumulation import contrastive_backward
from clip_train.loss import ContrastiveLoss
from clip_train.module import _check_logit_bias
from clip_train.siglip import SigLipLoss


def naive_siglip(image, text, logit_scale, logit_bias):
    """Loop over every pair: -log σ(z) for a match, -log σ(-z) otherwise; summed, divided by the images."""
    total = 0.0
    for i in range(image.shape[0]):
        for j in range(text.shape[0]):
            z = logit_scale.exp() * torch.dot(image[i], text[j]) + logit_bias
            total = total - torch.nn.functional.logsigmoid(z if i == j else -z)
    return total / image.shape[0]


def unit(rows: int, dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(rows, dim, generator=generator, dtype=torch.float64), dim=-1)


def temperature():
    scale = torch.tensor(math.log(10), dtype=torch.float64, requires_grad=True)
    return scale, torch.tensor(-10.0, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("batch", [1, 5])
def test_loss_and_gradients_equal_naive_reference(batch):
    image, text = unit(batch, 4, 0).requires_grad_(), unit(batch, 4, 1).requires_grad_()
    scale, bias = temperature()
    loss = SigLipLoss()(image, text, scale, bias)
    grads = torch.autograd.grad(loss, (image, text, scale, bias))
    reference = naive_siglip(image, text, scale, bias)
    reference_grads = torch.autograd.grad(reference, (image, text, scale, bias))
    torch.testing.assert_close(loss, reference)
    for got, want in zip(grads, reference_grads):
        torch.testing.assert_close(got, want)
    assert grads[3].abs() > 0 and grads[2].abs() > 0


def test_initial_loss_is_dominated_by_the_positives():
    """At b = -10 every pair scores near σ(-10): negatives cost ~0, each positive ~10 (the paper's start)."""
    image, text = unit(8, 16, 2), unit(8, 16, 3)
    loss = SigLipLoss()(image, text, torch.tensor(math.log(10)), torch.tensor(-10.0))
    assert 8 < float(loss) < 13


# -- accumulation, the model's bias and clamp ----------------------------------------------------


def siglip_model():
    torch.manual_seed(0)
    model = small_encoder().double()
    model.register_parameter("logit_bias", torch.nn.Parameter(torch.tensor(-2.0, dtype=torch.float64)))
    return model


def gradients(model, batch, micro_batches: int) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    contrastive_backward(model, SigLipLoss(), batch, micro_batches, lambda loss: loss.backward(), nullcontext)
    return {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("micro_batches", [2, 4])
def test_accumulation_gives_the_full_batch_gradients(micro_batches):
    model, batch = siglip_model(), make_batch()
    full = gradients(model, batch, 1)
    accumulated = gradients(model, batch, micro_batches)
    assert "logit_bias" in full and full["logit_bias"].abs() > 0
    for name in full:  # the bias and scale included: their gradient is not micro_batches times too big
        torch.testing.assert_close(accumulated[name], full[name], msg=name)


def test_siglip_config_gives_the_bias_and_an_unclipped_scale(compose_config):
    from hydra.utils import instantiate

    from clip_train.config import check_config

    cfg = compose_config("loss=siglip", "model=test")
    check_config(cfg)
    model = instantiate(cfg.model, text_tower={"vocab_size": 100})
    assert model.logit_scale.item() == pytest.approx(math.log(10))
    assert model.logit_bias.item() == -10.0
    with torch.no_grad():
        model.logit_scale.fill_(4.72)  # released SigLIP weights
    model.clamp_logit_scale_()
    assert model.logit_scale.item() == pytest.approx(4.72)
    _check_logit_bias(model, instantiate(cfg.loss))

    infonce = instantiate(compose_config("model=test").model, text_tower={"vocab_size": 100})
    assert infonce.logit_bias is None and "logit_bias" not in dict(infonce.named_parameters())
    with pytest.raises(ValueError, match="SigLipLoss needs a logit bias"):
        _check_logit_bias(infonce, SigLipLoss())
    with pytest.raises(ValueError, match="set model.init_logit_bias=null"):
        _check_logit_bias(model, ContrastiveLoss())
