"""Run a test function on several gloo processes on the CPU and collect what each rank returns."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _rank_main(rank: int, world: int, folder: str, function, args: tuple) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/init", rank=rank, world_size=world)
    torch.save(function(rank, world, *args), os.path.join(folder, f"rank{rank}.pt"))
    dist.destroy_process_group()


def on_gloo_ranks(function, world: int, folder, *args) -> list:
    """[function(rank, world, *args) for rank in range(world)], each call in its own process of one gloo group.

    `function` must be defined at module level so that the spawned processes can import it.
    """
    mp.spawn(_rank_main, args=(world, str(folder), function, args), nprocs=world, join=True)
    return [torch.load(os.path.join(folder, f"rank{rank}.pt"), weights_only=False) for rank in range(world)]
