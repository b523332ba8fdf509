"""The random states of this process (Python, NumPy, torch CPU and accelerators), for checkpoints.

Restored when training starts, after the DataLoader iterators (which draw their worker seeds
from torch's generator) are built, so the draws of the steps after a resume (dropout, patch
dropout) are those of the uninterrupted run. Every rank starts from the same seed and draws
alike, so rank 0's states, which the checkpoint holds, serve every rank.
"""

import random

import numpy as np
import torch


def rng_states() -> dict:
    """Plain Python values and tensors only, so `torch.load(weights_only=True)` reads the checkpoint."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (name, keys.tolist(), int(position), int(has_gauss), float(cached_gaussian)),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    name, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
