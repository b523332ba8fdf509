"""The random states of each rank (Python, NumPy, torch CPU and accelerators): seeded per rank, kept in checkpoints.

Every rank builds the model from the same seed, so the initial weights agree, and is then
re-seeded with seed + rank when fitting starts (as OpenCLIP does), so the ranks draw different
dropout and patch-dropout masks; with one seed for all, a global batch of W ranks would carry
each mask W times. The data pipeline seeds itself per rank and worker and needs none of this.

A checkpoint holds every rank's states, in rank order. They are restored when training
starts, after the DataLoader iterators (which draw their worker seeds from torch's generator)
are built, so the draws of the steps after a resume are those of the uninterrupted run, on
every rank.

Of the accelerator, each rank keeps the state of its own device only (CUDA's current device,
where Lightning put the rank), and restores it to its own device, whatever the devices visible
then: a job started under torchrun (8 visible per process) may resume under srun (1 per task).
Checkpoints from before this hold, per rank, the states of every device the rank could see; the
rank's own was the one of its local rank (Lightning puts local rank i on device i of those
visible), or the only one.
"""

import os
import random

import numpy as np
import torch
import torch.distributed as dist

from clip_train.distributed import rank_and_world


def seed_rank(rank: int) -> None:
    """Seed Python, NumPy and torch (every device) with seed + rank.

    The seed is the one `seed_everything` set (`clip_train.train.run` calls it with `cfg.seed`);
    Lightning keeps it in the PL_GLOBAL_SEED environment variable, which it also re-applies on
    every rank when DDP starts; 0 if it was never set.
    """
    seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) + rank
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_states() -> dict:
    """Plain Python values and tensors only, so `torch.load(weights_only=True)` reads the checkpoint.
    "device": the state of this rank's own accelerator device, None without one."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (name, keys.tolist(), int(position), int(has_gauss), float(cached_gaussian)),
        "torch": torch.get_rng_state(),
        "device": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
    }


def every_rank_rng_states() -> list[dict]:
    """`rng_states()` of every rank, in rank order; a collective, so every rank must call it."""
    _, world = rank_and_world()
    if world == 1:
        return [rng_states()]
    gathered = [None] * world
    dist.all_gather_object(gathered, rng_states())
    return gathered


def rank_rng_states(saved: list[dict] | dict | None, rank: int) -> dict | None:
    """This rank's states in what a checkpoint saved: a list in rank order, or (older checkpoints) rank 0's
    states alone. None, so the rank keeps its fresh seed, if none were saved for it (no states, or more
    ranks than the saving run had)."""
    per_rank = [saved] if isinstance(saved, dict) else saved or []
    return per_rank[rank] if rank < len(per_rank) else None


def own_device_state(states: dict, local_rank: int) -> torch.Tensor | None:
    """The saved state of the rank's own device: "device", or in older checkpoints the entry of the rank's
    local rank (or the only entry) in "cuda", the states of every device the saving rank could see."""
    if "device" in states:
        return states["device"]
    every_device = states.get("cuda") or []
    if len(every_device) == 1:
        return every_device[0]
    return every_device[local_rank] if local_rank < len(every_device) else None


def set_rng_states(states: dict, local_rank: int = 0) -> None:
    """Restore `rng_states()`; the accelerator state goes to this rank's current device (the one Lightning
    put local rank `local_rank` on)."""
    random.setstate(states["python"])
    name, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(states["torch"])
    device_state = own_device_state(states, local_rank)
    if device_state is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(device_state)
