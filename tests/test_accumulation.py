"""Exact gradient accumulation: naive accumulation is not the full batch, random state replay, BatchNorm
statistics see each micro-batch once, and two processes with micro-batches equal one full batch (every
objective's k micro-batches against its full batch: tests/test_objectives.py)."""

import copy
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import gradients, make_batch, small_encoder

from clip_train.model import CausalTextTower, DualEncoder, ImageTower
from clip_train.objectives import infonce_loss
from clip_train.training.accumulation import RandomState, split_batch


def make_model(**image_options):
    torch.manual_seed(0)
    return small_encoder(**image_options).double()


def test_naive_accumulation_is_not_the_full_batch_gradient():
    """What exact accumulation guards against: averaging separate micro-batch losses loses negatives."""
    model, batch = make_model(), make_batch()
    full = gradients(model, batch, 1)
    model.zero_grad(set_to_none=True)
    for chunk in split_batch(batch, 2):
        image, text = model(chunk)
        (infonce_loss(image, text, model.logit_scale) / 2).backward()
    assert not torch.allclose(model.image_tower.projection.weight.grad, full["image_tower.projection.weight"])


def test_random_state_replays_patch_dropout():
    model = make_model(patch_drop_rate=0.5).train()
    images = make_batch()["image"]
    state = RandomState()
    first = model.encode_image(images)
    second = model.encode_image(images)
    state.restore()
    replayed = model.encode_image(images)
    assert not torch.allclose(first, second)  # dropout is random...
    torch.testing.assert_close(replayed, first)  # ...and replayed exactly


def batch_norm_encoder() -> DualEncoder:
    """A dual encoder whose image trunk (timm's test_resnet) keeps BatchNorm running statistics."""
    torch.manual_seed(0)
    return DualEncoder(
        ImageTower("test_resnet", embed_dim=16, image_size=32, pool="avg"),
        CausalTextTower(16, vocab_size=50, width=32, layers=2, heads=2, context_length=12),
        embed_dim=16, image_size=32, context_length=12,
    ).double()  # fmt: skip


@pytest.mark.parametrize("micro_batches", [2, 4])
def test_batch_norm_statistics_are_updated_once_per_micro_batch(micro_batches):
    """The gradient-free caching pass must leave the buffers alone: after one step BatchNorm has counted
    `micro_batches` batches, with the running statistics of as many train-mode forwards of the chunks."""
    model, batch = batch_norm_encoder(), make_batch()
    reference = copy.deepcopy(model)
    gradients(model, batch, micro_batches)
    with torch.no_grad():
        for chunk in split_batch(batch, micro_batches):
            reference.image_tower(chunk["image"])
    counts = {name: int(b) for name, b in model.named_buffers() if name.endswith("num_batches_tracked")}
    assert counts and set(counts.values()) == {micro_batches}
    expected = dict(reference.named_buffers())
    for name, buffer in model.named_buffers():
        torch.testing.assert_close(buffer, expected[name], msg=name)


def test_indivisible_batch_is_refused():
    with pytest.raises(ValueError, match="data.batch_size=8 is not divisible by optim.accumulate=3"):
        split_batch(make_batch(), 3)


def _rank_main(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    model, batch = make_model(), make_batch()
    local = {key: value[rank * 4 : (rank + 1) * 4] for key, value in batch.items() if key != "bad_samples"}
    local["bad_samples"] = torch.tensor(0)
    grads = gradients(model, local, 2)  # 2 ranks × 2 micro-batches × 2 pairs
    for grad in grads.values():  # DDP's average over ranks
        dist.all_reduce(grad)
        grad /= 2
    torch.save(grads, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_accumulation_under_two_processes_equals_one_full_batch(tmp_path):
    mp.spawn(_rank_main, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    full = gradients(make_model(), make_batch(), 1)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for name in full:
            torch.testing.assert_close(got[name], full[name], msg=name)
