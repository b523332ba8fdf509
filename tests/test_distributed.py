"""Two gloo processes on the CPU against one process with the full batch: loss, every gradient, retrieval."""

import math
import os
from collections import Counter

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import PROBLEM_BATCH, colour_samples, make_problem

from clip_train.eval.retrieval import retrieval_metrics
from clip_train.objectives import infonce_loss

WORLD = 2


def loss_and_grads(images, texts, image_weight, text_weight):
    image_weight = image_weight.clone().requires_grad_()
    text_weight = text_weight.clone().requires_grad_()
    logit_scale = torch.tensor(math.log(1 / 0.07), dtype=torch.float64, requires_grad=True)
    image_features = torch.nn.functional.normalize(images @ image_weight, dim=-1)
    text_features = torch.nn.functional.normalize(texts @ text_weight, dim=-1)
    loss = infonce_loss(image_features, text_features, logit_scale)
    loss.backward()
    return loss.detach(), [image_weight.grad, text_weight.grad, logit_scale.grad], image_features, text_features


def _rank_main(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    images, texts, image_weight, text_weight = make_problem()
    local = slice(rank * PROBLEM_BATCH // WORLD, (rank + 1) * PROBLEM_BATCH // WORLD)
    loss, grads, image_features, text_features = loss_and_grads(images[local], texts[local], image_weight, text_weight)
    for grad in grads:  # what DDP does: average the gradients over ranks
        dist.all_reduce(grad)
        grad /= WORLD
    dist.all_reduce(loss)
    # uneven validation shares: rank 0 holds 4 pairs, rank 1 holds 2
    uneven = slice(0, 4) if rank == 0 else slice(4, PROBLEM_BATCH)
    with torch.no_grad():
        full_image = torch.nn.functional.normalize(images @ image_weight, dim=-1)
        full_text = torch.nn.functional.normalize(texts @ text_weight, dim=-1)
    metrics = retrieval_metrics(full_image[uneven], full_text[uneven], torch.tensor(1.0), ks=(1, 2))
    torch.save({"loss": loss / WORLD, "grads": grads, "metrics": metrics}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_equal_the_full_batch(tmp_path):
    mp.spawn(_rank_main, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    loss, grads, image_features, text_features = loss_and_grads(*make_problem())
    expected_metrics = retrieval_metrics(image_features.detach(), text_features.detach(), torch.tensor(1.0), ks=(1, 2))
    for rank in range(WORLD):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(result["loss"], loss)
        for got, want in zip(result["grads"], grads):
            torch.testing.assert_close(got, want)
        assert result["metrics"].keys() == expected_metrics.keys()
        for name, value in expected_metrics.items():
            assert math.isclose(result["metrics"][name], value, rel_tol=1e-6), name


def _data_rank_main(rank: int, init_file: str, pattern: str, out_dir: str) -> None:
    """One rank of a 2-process run of the data module, told its place as Lightning's trainer tells it."""
    from types import SimpleNamespace

    from clip_train.data import ShardDataModule

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    datamodule = ShardDataModule(
        pattern, pattern, batch_size=4, num_workers=2, image_size=16, context_length=8,
        cache_dir=os.environ["CLIP_TRAIN_CACHE"], shuffle_buffer=8, tokenizer_vocab_size=300,
    )  # fmt: skip
    datamodule.trainer = SimpleNamespace(global_rank=dist.get_rank(), world_size=dist.get_world_size(), accelerator=None)
    datamodule.setup("fit")
    train = [[int(k) for k in batch["key"]] for batch in datamodule.train_dataloader()]
    val = [int(k) for batch in datamodule.val_dataloader() for k in batch["key"]]
    torch.save({"train": train, "val": val}, os.path.join(out_dir, f"data{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_data_reads_every_key_in_equal_step_counts(tmp_path):
    from clip_train.data.shard_writer import write_shards

    write_shards(str(tmp_path), "train", colour_samples(70), samples_per_shard=9)  # 8 uneven shards: 9 × 7 + 7
    pattern = str(tmp_path / "train-{00000..00007}.tar")
    mp.spawn(_data_rank_main, args=(str(tmp_path / "init"), pattern, str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"data{rank}.pt") for rank in range(WORLD)]
    assert len(ranks[0]["train"]) == len(ranks[1]["train"]) == 9  # ceil(70 / (4 × 2)): equal steps on both ranks
    reads = Counter(key for r in ranks for batch in r["train"] for key in batch)
    assert set(reads) == set(range(70))  # 9 × 2 × 4 = 72 places: every sample once, and 2 of them twice
    assert sorted(reads.values()) == [1] * 68 + [2] * 2
    assert set(ranks[0]["val"]).isdisjoint(ranks[1]["val"])
    assert sorted(ranks[0]["val"] + ranks[1]["val"]) == list(range(70))
