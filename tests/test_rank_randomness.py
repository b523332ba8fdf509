"""Randomness per rank, under a real Lightning DDP fit on 2 gloo processes: the ranks draw different
patch-dropout masks in the same step, and a resume gives every rank back its own random state.

Both ranks train on the same batch every step, so with the weights DDP keeps equal, equal masks
would give equal patch-dropout outputs. One spawn serves both tests: an uninterrupted fit of
`STEPS` steps that checkpoints after step `SAVED_AT`, then a fit resumed from that checkpoint.
"""

import os
from functools import partial

import lightning as L
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import make_batch, small_encoder
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader

from clip_train.data.bad_data import BAD_KINDS
from clip_train.objectives import InfoNCE
from clip_train.training.module import ClipModule
from clip_train.training.optim import cosine_with_warmup
from clip_train.training.rng_state import rank_rng_states, rng_states

WORLD, STEPS, SAVED_AT = 2, 4, 2


class RecordRandomness(L.Callback):
    """Per step (1, 2, ...): torch's CPU random state as the step starts, and what the patch dropout of
    the image trunk put out in the step's forward."""

    def __init__(self) -> None:
        self.states: dict[int, torch.Tensor] = {}
        self.patch_dropout: dict[int, torch.Tensor] = {}
        self._step = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: ClipModule) -> None:
        pl_module.model.image_tower.trunk.patch_drop.register_forward_hook(self._keep_output)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: ClipModule, batch, batch_idx: int) -> None:
        self._step = trainer.global_step + 1
        self.states[self._step] = torch.get_rng_state()

    def _keep_output(self, module, inputs, output: torch.Tensor) -> None:
        self.patch_dropout[self._step] = output.detach().clone()


def _module() -> ClipModule:
    L.seed_everything(0)  # as clip_train.train.run seeds before it builds the model
    return ClipModule(
        small_encoder(patch_dropout=0.5).double(),
        InfoNCE(),
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
        scheduler=partial(cosine_with_warmup, warmup_steps=1),
    )


def _fit(out_dir: str, callbacks: list, ckpt_path: str | None = None) -> None:
    batch = make_batch() | {"bad_samples": torch.zeros(len(BAD_KINDS), dtype=torch.long)}
    trainer = L.Trainer(
        accelerator="cpu", devices=WORLD, strategy=DDPStrategy(process_group_backend="gloo"), max_steps=STEPS,
        logger=False, enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
        default_root_dir=out_dir, callbacks=callbacks,
    )  # fmt: skip
    trainer.fit(_module(), train_dataloaders=DataLoader([batch] * STEPS, batch_size=None), ckpt_path=ckpt_path)


def _rank_main(rank: int, init_file: str, out_dir: str) -> None:
    os.environ["LOCAL_RANK"] = str(rank)  # Lightning then takes the processes as launched for it
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    saves = ModelCheckpoint(
        f"{out_dir}/checkpoints", "step{step}", auto_insert_metric_name=False, every_n_train_steps=SAVED_AT, save_top_k=-1
    )
    uninterrupted, resumed = RecordRandomness(), RecordRandomness()
    _fit(out_dir, [uninterrupted, saves])
    _fit(out_dir, [resumed], ckpt_path=os.path.join(out_dir, "checkpoints", f"step{SAVED_AT}.ckpt"))
    records = {
        name: {"states": r.states, "patch_dropout": r.patch_dropout}
        for name, r in (("uninterrupted", uninterrupted), ("resumed", resumed))
    }
    torch.save(records, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """Per rank: {"uninterrupted" | "resumed": {"states": {step: state}, "patch_dropout": {step: output}}}."""
    out_dir = tmp_path_factory.mktemp("ranks")
    mp.spawn(_rank_main, args=(str(out_dir / "init"), str(out_dir)), nprocs=WORLD, join=True)
    return [torch.load(out_dir / f"rank{rank}.pt") for rank in range(WORLD)]


@pytest.mark.slow
def test_ranks_draw_different_patch_dropout_masks_in_the_same_step(ranks):
    first, second = (r["uninterrupted"]["patch_dropout"] for r in ranks)
    assert sorted(first) == sorted(second) == list(range(1, STEPS + 1))
    for step in first:
        assert first[step].shape == second[step].shape  # as many patches kept...
        assert not torch.allclose(first[step], second[step]), step  # ...but not the same ones


@pytest.mark.slow  # two spawned processes train and resume (the module fixture)
def test_resume_gives_every_rank_its_own_random_state(ranks):
    """The random state as each resumed step starts, then its masks, equal the uninterrupted run's on every rank."""
    resumed_steps = list(range(SAVED_AT + 1, STEPS + 1))
    for rank, runs in enumerate(ranks):
        assert sorted(runs["resumed"]["states"]) == resumed_steps
        for step in resumed_steps:
            assert torch.equal(runs["resumed"]["states"][step], runs["uninterrupted"]["states"][step]), (rank, step)
    for rank, runs in enumerate(ranks):
        for step in resumed_steps:
            kept, expected = runs["resumed"]["patch_dropout"][step], runs["uninterrupted"]["patch_dropout"][step]
            torch.testing.assert_close(kept, expected, msg=f"rank {rank}, step {step}")


def test_a_checkpoint_with_rank_0_states_alone_still_resumes_rank_0():
    """Older checkpoints held one set of states, rank 0's: rank 0 gets it back, any other rank keeps its seed."""
    module = _module()
    saved = rng_states()
    expected = torch.rand(3)
    module.on_load_checkpoint({"state_dict": module.state_dict(), "rng_states": saved})  # no trainer: rank 0
    module.on_train_start()
    torch.testing.assert_close(torch.rand(3), expected)
    assert rank_rng_states(saved, 1) is None
    later = rng_states()
    assert rank_rng_states([saved, later], 1) is later and rank_rng_states(None, 0) is None
