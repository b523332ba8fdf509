"""Every shell block of the README, pasted into bash as written: it runs, and every shard pattern reaches the config
whole (an unquoted brace range is expanded by bash into one argument per shard, and only the last would count)."""

import os

import pytest
from readme_shell import bash_blocks, config_value, run_block, shard_patterns

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
@pytest.mark.parametrize("line, block", bash_blocks(), ids=[f"README.md:{line}" for line, _ in bash_blocks()])
def test_readme_shell_block_runs_and_passes_every_shard_pattern_whole(line, block, tmp_path):
    done, configs = run_block(block, str(tmp_path), REPO)
    assert done.returncode == 0, f"README.md:{line} failed in bash:\n{done.stderr[-2000:]}"
    for key, pattern in shard_patterns(block).items():
        reached = [config_value(config, key) for config in configs]
        assert pattern in reached, f"README.md:{line}: {key}={pattern} reached the config as {reached}"


@pytest.mark.slow
def test_the_readme_own_shards_command_is_a_real_pre_training_run(tmp_path):
    line, block = next((line, block) for line, block in bash_blocks() if "data.train_shards" in block)  # the first
    done, configs = run_block(block, str(tmp_path), REPO)
    assert done.returncode == 0, f"README.md:{line}: {done.stderr[-2000:]}"
    (config,) = configs
    trainer = config["trainer"]
    assert (trainer["max_steps"], trainer["devices"], trainer["precision"]) == (43_750, 8, "bf16-mixed")
    assert (config["data"]["batch_size"], config["data"]["num_workers"]) == (256, 8)
    assert config["data"]["val_shards"] == "/data/cc3m_val/{00000..00003}.tar" and config["eval"]["tasks"] == {}
