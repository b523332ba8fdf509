"""scripts/gpu_check.sh in its CPU mode (`--cpu`: 2 gloo processes, the test preset): the checks it runs on a
lent GPU pass here too, the summary has one line per check, and a failing check makes the exit code 1."""

import os
import re
import subprocess

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "scripts", "gpu_check.sh")
CHECKS = ["ddp", "fsdp", "compiled", "benchmark", "evaluate_ddp", "export_ddp", "evaluate_fsdp", "export_fsdp"]


def gpu_check(tmp_path, **env: str) -> tuple[int, dict[str, str], str]:
    """Run the script with `--cpu` in a scratch folder (the test's working directory is not the repository's);
    returns the exit code, {check: its summary line}, in order, and the whole output."""
    result = subprocess.run(["bash", SCRIPT, "--cpu"], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "GPU_CHECK_DIR": str(tmp_path / "checks"), **env})  # fmt: skip
    summary = result.stdout.split("gpu_check summary", 1)[-1].splitlines()[1:]
    lines = {line.split()[1]: line for line in summary if re.match(r"^(pass|FAIL|skip) ", line)}
    return result.returncode, lines, result.stdout + result.stderr


def status(line: str) -> str:
    return line.split()[0]


@pytest.mark.slow
def test_cpu_mode_passes_every_check(tmp_path):
    code, lines, output = gpu_check(tmp_path)
    assert list(lines) == CHECKS, output
    assert all(status(line) == "pass" for line in lines.values()), output
    assert code == 0
    for run in ("ddp", "fsdp", "compiled"):
        assert re.fullmatch(rf"pass {run} train/loss \d+\.\d{{3}}", lines[run])
    assert re.fullmatch(r"pass benchmark \d+\.\d samples/s, MFU \d+\.\d%", lines["benchmark"])
    for run in ("ddp", "fsdp"):
        assert re.fullmatch(rf"pass evaluate_{run} R@1 [01]\.\d{{3}}", lines[f"evaluate_{run}"])
        assert lines[f"export_{run}"] == f"pass export_{run}"  # the script compared the export's embeddings
        assert os.path.isfile(tmp_path / "checks" / f"exported_{run}" / "model.safetensors")


@pytest.mark.slow  # 8 s idle (a Python start-up with torch and Hydra), twice that on a shared machine
def test_a_failing_check_is_named_and_makes_the_exit_code_1(tmp_path):
    code, lines, output = gpu_check(  # the other checks skipped: GPU_CHECK_SKIP works too
        tmp_path, GPU_CHECK_SKIP="ddp fsdp compiled evaluate export", GPU_CHECK_BENCHMARK_MODEL="no_such_preset"
    )
    assert code == 1, output
    assert status(lines.pop("benchmark")) == "FAIL"
    assert list(lines) == [name for name in CHECKS if name != "benchmark"]
    assert all(status(line) == "skip" for line in lines.values())
