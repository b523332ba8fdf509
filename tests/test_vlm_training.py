"""A VLM stage under Lightning: 2 gloo processes and gradient accumulation equal one full batch, a resumed stage
equals an uninterrupted one, and the batches each rank reads."""

import os

import lightning as L
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import OmegaConf
from PIL import Image
from tiny_vlm import tiny_vlm

from clip_train.data.transforms import CLIP_MEAN, CLIP_STD, eval_transform
from clip_train.vlm.conversations import Conversation, Turn
from clip_train.vlm.sampler import ResumableSampler
from clip_train.vlm.stages import train_stage

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}
SETTINGS = OmegaConf.create(
    {
        "steps": 3,
        "lr": 3e-3,
        "weight_decay": 0.01,
        "warmup_steps": 1,
        "lm": "full",
        "lora_rank": 8,
        "checkpoint_every_n_steps": None,
    }
)
CPU = {"accelerator": "cpu", "enable_progress_bar": False}


def _conversations(folder: str, count: int = 12) -> list[Conversation]:
    """Squares of three colours; every answer is one word, so every sample has as many answer tokens."""
    conversations = []
    for index in range(count):
        colour = list(COLOURS)[index % 3]
        path = os.path.join(folder, f"{index}.png")
        Image.new("RGB", (32, 32), COLOURS[colour]).save(path)
        conversations.append(Conversation(path, (Turn("what color is the square?", colour, "color"),)))
    return conversations


def _train(run_dir: str, batch_size: int, trainer_settings: dict, settings=SETTINGS, callbacks=()) -> dict:
    model, tokenizer = tiny_vlm()
    conversations = _conversations(os.path.dirname(run_dir))
    preprocess = eval_transform(32, CLIP_MEAN, CLIP_STD)
    train_stage("instruct", model, tokenizer, conversations, preprocess, settings, trainer_settings, run_dir,
                batch_size=batch_size, num_workers=0, callbacks=callbacks)  # fmt: skip
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def _rank_main(rank: int, folder: str) -> None:
    os.environ["LOCAL_RANK"] = str(rank)  # Lightning then takes the processes as launched for it
    dist.init_process_group("gloo", init_method=f"file://{folder}/init", rank=rank, world_size=2)
    strategy = DDPStrategy(process_group_backend="gloo")
    weights = _train(f"{folder}/ddp", batch_size=2, trainer_settings=CPU | {"devices": 2, "strategy": strategy})
    torch.save(weights, f"{folder}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_and_accumulation_equal_one_full_batch(tmp_path):
    mp.spawn(_rank_main, args=(str(tmp_path),), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    full = _train(str(tmp_path / "full"), batch_size=4, trainer_settings=CPU | {"devices": 1})
    accumulated = _train(str(tmp_path / "accumulated"), batch_size=2, trainer_settings=CPU | {"accumulate_grad_batches": 2})
    start = tiny_vlm()[0].state_dict()
    assert any(not torch.allclose(full[name], start[name]) for name in full)  # the weights moved
    for name in full:
        for other in (*ranks, accumulated):
            torch.testing.assert_close(other[name], full[name], rtol=1e-4, atol=1e-5, msg=name)


class StopAfter(L.Callback):
    def __init__(self, steps: int):
        self.steps = steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_index) -> None:
        if trainer.global_step == self.steps:
            trainer.should_stop = True


@pytest.mark.slow
def test_a_resumed_stage_equals_an_uninterrupted_one(tmp_path):
    """8 steps of 2 of the 12 conversations cross an epoch boundary (6 steps), after a stop at step 2."""
    settings = OmegaConf.merge(SETTINGS, {"steps": 8, "checkpoint_every_n_steps": 2})
    whole = _train(str(tmp_path / "whole"), batch_size=2, trainer_settings=CPU, settings=settings)
    _train(str(tmp_path / "stopped"), batch_size=2, trainer_settings=CPU, settings=settings, callbacks=[StopAfter(2)])
    assert torch.load(tmp_path / "stopped/instruct/checkpoints/last.ckpt", weights_only=False)["global_step"] == 2
    resumed = _train(str(tmp_path / "stopped"), batch_size=2, trainer_settings=CPU, settings=settings)
    for name in whole:
        torch.testing.assert_close(resumed[name], whole[name], msg=name)


def test_ranks_read_disjoint_shares_of_one_order_and_resume_where_they_stopped():
    reads = lambda sampler, n: [index for index, _ in zip(sampler, range(n))]  # noqa: E731
    alone = reads(ResumableSampler(10, seed=3), 20)
    assert sorted(alone[:10]) == sorted(alone[10:]) == list(range(10)) and alone[:10] != alone[10:]
    ranks = [reads(ResumableSampler(10, seed=3, rank=r, world=2), 10) for r in range(2)]
    assert ranks[0][:5] == alone[0:10:2] and ranks[1][:5] == alone[1:10:2]
    assert reads(ResumableSampler(10, seed=3, rank=1, world=2, start=3), 7) == ranks[1][3:]
    with pytest.raises(ValueError, match="3 conversations cannot be shared by 4 ranks"):
        ResumableSampler(3, seed=0, world=4)
