"""SigLIP's ring exchange under 2 and 3 gloo processes against one process with the full batch.

Kept apart from tests/test_siglip.py so the spawned workers do not import that test file; every process
builds the shared float64 problem of `helpers.make_problem`.
"""

import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import PROBLEM_BATCH, make_problem

from clip_train.distributed import pass_to_next_rank
from clip_train.objectives import siglip, siglip_loss


def loss_and_grads(images, texts, image_weight, text_weight):
    image_weight, text_weight = image_weight.clone().requires_grad_(), text_weight.clone().requires_grad_()
    scale = torch.tensor(math.log(10), dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)  # near the scores: both signs carry gradient
    image_features = torch.nn.functional.normalize(images @ image_weight, dim=-1)
    text_features = torch.nn.functional.normalize(texts @ text_weight, dim=-1)
    loss = siglip_loss(image_features, text_features, scale, bias)
    loss.backward()
    return loss.detach(), [image_weight.grad, text_weight.grad, scale.grad, bias.grad]


class _KeepGradient(torch.autograd.Function):
    """A broken hop, for the mutation check: forward exchanges, backward keeps the gradient here."""

    @staticmethod
    def forward(ctx, tensor):
        return pass_to_next_rank(tensor)  # the real hop; inside forward, autograd does not record it

    @staticmethod
    def backward(ctx, grad):
        return grad


def _rank_main(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    images, texts, image_weight, text_weight = make_problem()
    local = slice(rank * PROBLEM_BATCH // world, (rank + 1) * PROBLEM_BATCH // world)
    results = {}
    for variant in ("ring", "mutant"):
        if variant == "mutant":
            siglip.pass_to_next_rank = _KeepGradient.apply
        loss, grads = loss_and_grads(images[local], texts[local], image_weight, text_weight)
        for grad in grads:  # what DDP does: average the gradients over ranks
            dist.all_reduce(grad)
            grad /= world
        dist.all_reduce(loss)
        results[variant] = {"loss": loss / world, "grads": grads}
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 3])
def test_ring_under_several_processes_equals_the_full_batch(tmp_path, world):
    """With 3 ranks the text blocks travel two hops, so a gradient sent back the wrong way would show."""
    mp.spawn(_rank_main, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True)
    loss, grads = loss_and_grads(*make_problem())
    for rank in range(world):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(result["ring"]["loss"], loss)
        for got, want in zip(result["ring"]["grads"], grads):
            torch.testing.assert_close(got, want)
        # the mutation: the same forward (so the same loss) with gradients kept by the receiving rank
        torch.testing.assert_close(result["mutant"]["loss"], loss)
        assert not torch.allclose(result["mutant"]["grads"][1], grads[1]), "the test must catch unreturned gradients"
        torch.testing.assert_close(result["mutant"]["grads"][2], grads[2])  # the scalars never travel
