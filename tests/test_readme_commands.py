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
