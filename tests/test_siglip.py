"""SigLIP: the sigmoid loss against a naive per-pair reference, the model's bias and clamp (the ring
under several processes: tests/test_siglip_ring.py; exact accumulation: tests/test_objectives.py)."""

import math

import pytest
import torch

from clip_train.objectives import InfoNCE, SigLip, check_objective, siglip_loss


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
    loss = siglip_loss(image, text, scale, bias)
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
    loss = siglip_loss(image, text, torch.tensor(math.log(10)), torch.tensor(-10.0))
    assert 8 < float(loss) < 13


# -- the model's bias and clamp ---------------------------------------------------------------------


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
    check_objective(model, instantiate(cfg.loss))

    infonce = instantiate(compose_config("model=test").model, text_tower={"vocab_size": 100})
    assert infonce.logit_bias is None and "logit_bias" not in dict(infonce.named_parameters())
    with pytest.raises(ValueError, match="SigLip needs a logit bias"):
        check_objective(infonce, SigLip())
    with pytest.raises(ValueError, match="set model.init_logit_bias=null"):
        check_objective(model, InfoNCE())
