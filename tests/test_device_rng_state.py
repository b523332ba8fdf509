"""Each rank restores its own accelerator device's random state, whatever devices are visible on resume.

The CPU-only test machine has no CUDA, so `torch.cuda`'s random-state functions are replaced by a fake with
a given number of visible devices and a current device, which, like CUDA, refuses a device index it does
not have. The layouts are the cluster's: torchrun shows each process the node's 8 GPUs (local rank i on
device i), srun with one GPU per task shows each task 1 (device 0).
"""

import pytest
import torch

from clip_train.training.rng_state import rng_states, set_rng_states


class FakeCuda:
    """`visible` devices, each with its own random state (distinct bytes per device), the current one `current`."""

    def __init__(self, visible: int, current: int, seed: int):
        self.current = current
        self.states = [torch.randint(0, 256, (16,), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed + i))
                       for i in range(visible)]  # fmt: skip

    def _index(self, device) -> int:
        index = self.current if device in ("cuda", None) else int(device)
        if not 0 <= index < len(self.states):
            raise RuntimeError(f"CUDA error: invalid device ordinal {index} ({len(self.states)} visible)")
        return index

    def get_rng_state(self, device="cuda") -> torch.Tensor:
        return self.states[self._index(device)].clone()

    def set_rng_state(self, state: torch.Tensor, device="cuda") -> None:
        self.states[self._index(device)] = state.clone()

    def get_rng_state_all(self) -> list[torch.Tensor]:
        return [self.get_rng_state(i) for i in range(len(self.states))]

    def set_rng_state_all(self, states: list[torch.Tensor]) -> None:
        for index, state in enumerate(states):
            self.set_rng_state(state, index)

    def install(self, monkeypatch) -> "FakeCuda":
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(self.states))
        monkeypatch.setattr(torch.cuda, "current_device", lambda: self.current)
        for name in ("get_rng_state", "set_rng_state", "get_rng_state_all", "set_rng_state_all"):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))
        return self


def _saved_under(monkeypatch, visible: int, current: int) -> tuple[dict, torch.Tensor]:
    """(rng_states() of a rank on device `current` of `visible`, that device's state)."""
    saving = FakeCuda(visible, current, seed=100).install(monkeypatch)
    return rng_states(), saving.states[current].clone()


def test_a_rank_saved_under_torchrun_restores_its_own_device_under_srun(monkeypatch):
    """Saved by local rank 3 on device 3 of 8; resumed as a task with 1 visible device: it gets device 3's state."""
    saved, own = _saved_under(monkeypatch, visible=8, current=3)
    resumed = FakeCuda(visible=1, current=0, seed=200).install(monkeypatch)
    set_rng_states(saved, local_rank=3)
    assert torch.equal(resumed.states[0], own)


def test_a_rank_saved_under_srun_restores_its_own_device_under_torchrun_and_no_other(monkeypatch):
    """Saved by a task with 1 visible device; resumed as local rank 3 of 8 (current device 3): device 3 gets the
    saved state, the 7 others keep theirs. The code that saved every visible device's state restored the one
    saved state to device 0 and left device 3 as it was."""
    saved, own = _saved_under(monkeypatch, visible=1, current=0)
    resumed = FakeCuda(visible=8, current=3, seed=200).install(monkeypatch)
    before = [state.clone() for state in resumed.states]
    set_rng_states(saved, local_rank=3)
    assert torch.equal(resumed.states[3], own)
    assert all(torch.equal(resumed.states[i], before[i]) for i in range(8) if i != 3)


@pytest.mark.parametrize(("local_rank", "visible_now"), [(0, 1), (3, 1), (3, 8)])
def test_an_older_checkpoint_with_every_visible_device_restores_the_ranks_own(monkeypatch, local_rank, visible_now):
    """Older checkpoints hold "cuda": the states of all 8 devices the saving rank saw. Resumed with 1 visible or 8,
    the rank's current device gets the entry of its local rank. The old code set all 8 and, with 1 visible,
    failed on device 1 ("invalid device ordinal")."""
    old = {key: value for key, value in rng_states().items() if key != "device"}
    saving = FakeCuda(visible=8, current=local_rank, seed=100)
    old["cuda"] = saving.get_rng_state_all()
    resumed = FakeCuda(visible=visible_now, current=local_rank if visible_now > 1 else 0, seed=200).install(monkeypatch)
    set_rng_states(old, local_rank=local_rank)
    assert torch.equal(resumed.states[resumed.current], saving.states[local_rank])
