"""Numerical faults: a NaN step is skipped with nothing updated, on every rank; K in a row stop the run."""

import math
import os
import re

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Shard

from clip_train.train import run
from clip_train.training.numerics import NonFiniteTraining, step_verdict

FAST = ("debug=fast", "logger=[]", "trainer.limit_val_batches=0", "trainer.enable_progress_bar=false")


def _verdicts_rank_main(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    weight = torch.nn.Parameter(torch.ones(3))
    verdicts = []
    for bad_loss_rank, bad_grad_rank in [(None, None), (1, None), (None, 0)]:
        weight.grad = torch.full((3,), math.nan if rank == bad_grad_rank else 0.5)
        loss = torch.tensor(math.inf if rank == bad_loss_rank else 1.0)
        verdict = step_verdict(loss, [weight])
        verdicts.append((verdict.loss_finite, verdict.grads_finite))
    weight.grad = torch.full((3,), 1.0 + rank)  # rank 0's shard has norm √3, rank 1's 2√3
    mesh = init_device_mesh("cpu", (2,))
    shard = torch.nn.Parameter(DTensor.from_local(torch.ones(3), mesh, [Shard(0)]))  # as FSDP holds a (6,) parameter
    shard.grad = DTensor.from_local(torch.full((3,), 1.0 + rank), mesh, [Shard(0)])
    replicated, sharded = step_verdict(torch.tensor(2.0 * rank), [weight]), step_verdict(torch.tensor(0.0), [shard])
    norms = (replicated.mean_loss, replicated.grad_norm.item(), sharded.grad_norm.item())
    torch.save((verdicts, norms), os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_every_rank_skips_when_any_rank_sees_a_non_finite_loss_or_gradient_and_gets_the_mean_loss_and_norm(tmp_path):
    mp.spawn(_verdicts_rank_main, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        verdicts, (mean_loss, replicated_norm, sharded_norm) = torch.load(tmp_path / f"rank{rank}.pt")
        assert verdicts == [(True, True), (False, True), (True, False)]
        assert mean_loss == 1.0  # (0 + 2) / 2 ranks
        assert replicated_norm == pytest.approx(math.sqrt(3) * (1 + rank))  # DDP: each rank's own is the whole
        assert sharded_norm == pytest.approx(math.sqrt(3 + 12))  # FSDP: the shards' squares summed over ranks


def test_a_nan_loss_skips_its_step_without_any_update_and_the_run_finishes(compose_config, tmp_path):
    record = tmp_path / "around.pt"
    metrics = run(
        compose_config(
            *FAST, "trainer.max_steps=4", "+callbacks.nan._target_=faults.NonFiniteLossAt", "+callbacks.nan.batches=[2]",
            f"+callbacks.nan.record={record}",
        )
    )  # fmt: skip
    assert metrics["train/skipped_steps"] == 1
    assert metrics["train/samples_seen"] == 5 * 16  # 4 optimizer steps took 5 batches
    assert math.isfinite(metrics["train/loss"])
    around = {r["batch"]: r for r in torch.load(record, weights_only=False)}
    bad, good = around[2], around[1]
    for name, before in bad["before"]["params"].items():
        assert torch.equal(bad["after"]["params"][name], before), name
    assert bad["after"]["optimizer_steps"] == bad["before"]["optimizer_steps"]  # AdamW's state did not move
    assert (bad["after"]["lr"], bad["after"]["global_step"]) == (bad["before"]["lr"], bad["before"]["global_step"])
    assert any(not torch.equal(good["after"]["params"][n], p) for n, p in good["before"]["params"].items())
    assert good["after"]["global_step"] == good["before"]["global_step"] + 1
    assert around[4]["after"]["global_step"] == 4


@pytest.mark.slow
def test_consecutive_nan_steps_stop_the_run_naming_the_last_good_checkpoint(compose_config, tmp_path):
    cfg = compose_config(
        *FAST, "trainer.max_steps=10", "optim.max_consecutive_bad_steps=3", "callbacks.model_checkpoint.every_n_train_steps=2",
        "+callbacks.nan._target_=faults.NonFiniteLossAt", "+callbacks.nan.batches=[3,4,5]",
        f"+callbacks.nan.record={tmp_path / 'around.pt'}",
    )  # fmt: skip
    last = os.path.join(cfg.paths.output_dir, "checkpoints", "last.ckpt")
    with pytest.raises(NonFiniteTraining, match=rf"^3 consecutive .*\(after step 3\).*ckpt_path={re.escape(last)} "):
        run(cfg)
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 2
