"""Every shell block of README.md and of the docs pages, pasted into bash as written: it runs, and every shard pattern
reaches the config whole (an unquoted brace range is expanded by bash into one argument per shard, and only the last
would count)."""

import math
import os

import pytest
import torch
from omegaconf import OmegaConf
from readme_shell import bash_blocks, config_value, run_block, shard_patterns

from clip_train.training.training_length import total_optimizer_steps

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
@pytest.mark.parametrize("where, block", bash_blocks(), ids=[where for where, _ in bash_blocks()])
def test_docs_shell_block_runs_and_passes_every_shard_pattern_whole(where, block, tmp_path):
    done, configs = run_block(block, str(tmp_path), REPO)
    assert done.returncode == 0, f"{where} failed in bash:\n{done.stderr[-2000:]}"
    for key, pattern in shard_patterns(block).items():
        reached = [config_value(config, key) for config in configs]
        assert pattern in reached, f"{where}: {key}={pattern} reached the config as {reached}"


@pytest.mark.slow
def test_the_readme_own_shards_command_is_a_real_pre_training_run(tmp_path, monkeypatch):
    """The first own-shards command of the README, composed as bash passes it, then resolved as a training process
    on a node would resolve it: the epochs set the length (the data module's epoch; CC3M's 2.8M pairs at 8 × 256:
    1368 batches, 43,776 steps), the workers follow the CPUs and the precision the GPUs, on 8 devices."""
    where, block = next((w, block) for w, block in bash_blocks() if w.startswith("README.md:") and "data.train_shards" in block)
    done, configs = run_block(block, str(tmp_path), REPO)
    assert done.returncode == 0, f"{where}: {done.stderr[-2000:]}"
    (composed,) = configs
    config = OmegaConf.create(composed)
    trainer, data = config.trainer, config.data
    assert (trainer.max_steps, trainer.max_epochs, trainer.devices, data.samples_per_epoch) == (-1, 32, 8, None)
    batches = math.ceil(2_800_000 / (data.batch_size * trainer.devices))
    assert total_optimizer_steps(trainer.max_steps, trainer.max_epochs, batches) == 43_776
    assert data.batch_size == 256 and data.val_shards == "/data/cc3m_val/{00000..00003}.tar" and config.eval.tasks == {}

    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert data.num_workers == 64 // 8 - 1  # torchrun or Lightning's launcher: 8 processes share the 64 cores
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "12")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "8")
    assert data.num_workers == 12 - 1  # srun, one task of 12 CPUs per GPU

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for bf16, precision in ((True, "bf16-mixed"), (False, "16-mixed")):  # A100/H100; V100/T4
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda bf16=bf16: bf16)
        assert trainer.precision == precision
