"""The GPU benchmark's path on the CPU: `scripts/benchmark.py --synthetic-data` trains the tiny preset on
one device-made uint8 batch, normalised on the device, and reports step time, data wait, samples/s and MFU."""

import json
import os
import subprocess
import sys

import pytest
import torch

from clip_train.build import build_datamodule

FIXED_DEVICE_BATCH = "clip_train.data.fixed_device_batch.FixedDeviceBatches"
SCRIPT = os.path.join(os.path.dirname(__file__), "..", "scripts", "benchmark.py")


def test_fixed_device_batch_is_made_once_as_uint8_and_normalised_on_the_device(compose_config):
    data = build_datamodule(compose_config("model=tiny", "data.batch_size=4", f"data._target_={FIXED_DEVICE_BATCH}"))
    placeholder = next(iter(data.train_dataloader()))
    first = data.transfer_batch_to_device(placeholder, torch.device("cpu"), 0)
    assert first["image"].dtype == torch.uint8 and first["image"].shape == (4, 3, 64, 64)
    assert first["input_ids"].shape == (4, 32) and int(first["input_ids"].max()) < len(data.tokenizer)
    assert data.transfer_batch_to_device(placeholder, torch.device("cpu"), 0) is first  # made once
    image = data.on_after_batch_transfer(first, 0)["image"]
    mean = torch.tensor(data.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(data.image_std).view(1, 3, 1, 1)
    torch.testing.assert_close(image, (first["image"].float() / 255 - mean) / std)


@pytest.mark.slow
def test_synthetic_data_benchmark_runs_the_step_and_reports_mfu(tmp_path):
    out = tmp_path / "benchmark.json"
    command = [sys.executable, SCRIPT, "--synthetic-data", "--steps", "6", "--out", str(out),
               "--workdir", str(tmp_path), "model=tiny", "data.batch_size=8"]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    result = json.loads(out.read_text())
    assert result["synthetic_data"] and result["steps_measured"] >= 3  # the first 20% are warm-up
    assert result["samples_per_sec"] > 0 and result["step_time_s"] == 8 / result["samples_per_sec"]
    assert 0 <= result["data_wait_share"] < 0.5  # nothing to wait for but the Python between steps
    assert 0 < result["mfu"] < 1
    with open(os.path.join(result["run_dir"], ".hydra", "config.yaml")) as config:
        assert FIXED_DEVICE_BATCH in config.read()  # the run trained without the loader
