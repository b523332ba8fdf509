"""The contrastive loss against a naive per-pair reference, and the temperature's handling."""

import math

import pytest
import torch

from clip_train.objectives import infonce_loss


def naive_infonce(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Loop over pairs: -log softmax of the matching score, image->text and text->image, averaged."""
    scale = logit_scale.exp()
    n = image.shape[0]
    total = 0.0
    for i in range(n):
        image_scores = [scale * torch.dot(image[i], text[j]) for j in range(n)]
        text_scores = [scale * torch.dot(text[i], image[j]) for j in range(n)]
        total = total - (image_scores[i] - torch.logsumexp(torch.stack(image_scores), 0))
        total = total - (text_scores[i] - torch.logsumexp(torch.stack(text_scores), 0))
    return total / (2 * n)


def unit(rows: int, dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(rows, dim, generator=generator, dtype=torch.float64), dim=-1)


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_loss_and_gradients_equal_naive_reference(batch):
    image = unit(batch, 5, 0).requires_grad_()
    text = unit(batch, 5, 1).requires_grad_()
    scale = torch.tensor(math.log(1 / 0.07), dtype=torch.float64, requires_grad=True)
    loss = infonce_loss(image, text, scale)
    grads = torch.autograd.grad(loss, (image, text, scale))

    reference = naive_infonce(image, text, scale)
    reference_grads = torch.autograd.grad(reference, (image, text, scale))
    torch.testing.assert_close(loss, reference)
    for got, want in zip(grads, reference_grads):
        torch.testing.assert_close(got, want)
    if batch > 1:  # one pair has no negatives: loss 0 at any temperature
        assert grads[2].abs() > 0, "logit_scale must receive a gradient"


def test_perfectly_aligned_pairs_give_low_loss_and_random_pairs_near_log_n():
    features = torch.eye(16)
    assert infonce_loss(features, features, torch.tensor(math.log(100))) < 1e-3
    image, text = unit(512, 64, 2).float(), unit(512, 64, 3).float()
    loss = infonce_loss(image, text, torch.tensor(0.0))  # temperature 1: logits within [-1, 1]
    assert abs(float(loss) - math.log(512)) < 0.05


def test_loss_is_float32_under_bf16_autocast():
    image, text = unit(4, 8, 4).float(), unit(4, 8, 5).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = infonce_loss(image.bfloat16(), text.bfloat16(), torch.tensor(2.0))
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, naive_infonce(image.bfloat16().float(), text.bfloat16().float(), torch.tensor(2.0)))
