"""The command line as a user runs it: a subprocess per run, real configs, tiny model."""

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import colour_samples

from clip_train.data.shard_writer import write_shards

REQUIRED_METRICS = {
    "val/loss",
    "val/image_to_text_R@1",
    "val/image_to_text_R@5",
    "val/image_to_text_R@10",
    "val/text_to_image_R@1",
    "val/text_to_image_R@5",
    "val/text_to_image_R@10",
    "train/samples_seen",
    "data/bad_samples",
}


def clip_train(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "clip_train", *overrides], capture_output=True, text=True, env=os.environ, timeout=600
    )


@pytest.mark.slow
def test_run_writes_metrics_checkpoint_config_and_every_logger_then_resumes(tmp_path):
    run_dir = tmp_path / "run"
    done = clip_train("debug=fast", f"hydra.run.dir={run_dir}", "logger=[csv,tensorboard,wandb]")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert REQUIRED_METRICS <= set(metrics) and all(isinstance(v, float) for v in metrics.values())
    assert metrics["train/samples_seen"] == 6 * 16 and metrics["data/bad_samples"] == 0
    assert json.loads(done.stdout[done.stdout.index("{") :]) == metrics  # printed at the end
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "csv" / "metrics.csv").is_file()
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(run_dir / "tensorboard"))
    assert any(name.startswith("offline-run") for name in os.listdir(run_dir / "wandb"))

    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 6 and checkpoint["hyper_parameters"]["recipe"]["model"]["embed_dim"] == 32

    resumed = clip_train("debug=fast", f"hydra.run.dir={run_dir}", "ckpt_path=last", "trainer.max_steps=9")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["train/samples_seen"] == 9 * 16


@pytest.mark.slow
def test_two_process_ddp_run_with_accumulation_and_uneven_validation_shares(tmp_path):
    # debug=fast validates on one 64-pair shard: rank 0 reads it, rank 1 has nothing, and
    # both must still finish (no DDP collective may wait on the rank with more batches);
    # optim.accumulate=2 runs the no_sync micro-steps through Lightning's DDP
    done = clip_train(
        "debug=fast", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
        "optim.accumulate=2", f"hydra.run.dir={tmp_path}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["train/samples_seen"] == 6 * 16 * 2
    assert REQUIRED_METRICS <= set(metrics)


def test_misspelt_key_fails_before_any_work(tmp_path):
    done = clip_train("data.batch_sze=8", f"hydra.run.dir={tmp_path}/run")
    assert done.returncode != 0 and "Unknown config key 'data.batch_sze'" in done.stderr
    assert "Did you mean 'data.batch_size'?" in done.stderr and "use +data.batch_sze" not in done.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_evaluate_names_a_misspelt_task_key_before_loading_the_model(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "clip_train.evaluate", f"checkpoint={tmp_path}/none.ckpt", f"hydra.run.dir={tmp_path}/run",
         "+eval/task@eval.tasks.zeroshot.mine=zeroshot", f"+eval.tasks.zeroshot.mine.rot={tmp_path}"],
        capture_output=True, text=True, env=os.environ, timeout=600,
    )  # fmt: skip
    assert done.returncode != 0 and "Unknown config key 'eval.tasks.zeroshot.mine.rot'" in done.stderr
    assert "FileNotFoundError" not in done.stderr  # the missing checkpoint was never opened


@pytest.mark.slow
def test_missing_shard_fails_naming_the_path(tmp_path):
    missing = tmp_path / "nowhere-{00000..00002}.tar"
    done = clip_train(f"data.train_shards={missing}", "model=test", f"hydra.run.dir={tmp_path}/run")
    assert done.returncode != 0 and "nowhere-00000.tar" in done.stderr


def test_brace_ranges_are_quoted_for_hydra():
    from clip_train.cli import quote_shard_ranges

    assert quote_shard_ranges(["data.train_shards=/d/{000..009}.tar", "trainer.devices=2"]) == [
        "data.train_shards='/d/{000..009}.tar'",
        "trainer.devices=2",
    ]
    assert quote_shard_ranges(["data.val_shards='/d/{0..1}.tar'"]) == ["data.val_shards='/d/{0..1}.tar'"]


def test_a_key_given_twice_is_refused_before_anything_is_built(tmp_path):
    # what bash passes for an unquoted data.train_shards=DIR/{00000..00003}.tar: four overrides of one key
    write_shards(str(tmp_path), "train", colour_samples(8), samples_per_shard=2)
    expanded = [f"data.train_shards={tmp_path}/train-{i:05d}.tar" for i in range(4)]
    done = clip_train(*expanded, "model=test", "trainer.max_steps=1", "data.num_workers=0", f"hydra.run.dir={tmp_path}/run")
    assert done.returncode != 0
    assert "data.train_shards was given 4 times" in done.stderr
    assert f"data.train_shards='{tmp_path}/train-{{00000..00003}}.tar'" in done.stderr
    assert not (tmp_path / "run").exists()
    evaluated = subprocess.run(
        [sys.executable, "-m", "clip_train.evaluate", "checkpoint=a.ckpt", "checkpoint=b.ckpt"],
        capture_output=True, text=True, env=os.environ, timeout=600,
    )  # fmt: skip
    assert evaluated.returncode != 0 and "checkpoint was given 2 times" in evaluated.stderr


def test_repeated_keys_message_names_the_key_the_count_and_the_quoted_pattern():
    from clip_train.cli import repeated_keys_message

    assert repeated_keys_message(["-m", "loss=infonce,siglip", "+data.x=1", "trainer.devices=2"]) is None
    message = repeated_keys_message(["data.val_shards=/v/7.tar", "data.val_shards=/v/8.tar", "data.val_shards=/v/9.tar"])
    assert message.startswith("data.val_shards was given 3 times") and "data.val_shards='/v/{7..9}.tar'" in message
    assert "trainer.devices='PATTERN'" in repeated_keys_message(["trainer.devices=2", "+trainer.devices=4"])


def test_lightnings_own_relaunch_of_a_ddp_rank_is_not_a_repeated_key():
    """Lightning starts the other local ranks with the user's arguments plus hydra.run.dir (again), the job name and
    no output subdir; only what the user typed is checked (the DDP run in this file failed on its repeat)."""
    from clip_train.cli import repeated_keys_message, typed_overrides

    user = ["debug=fast", "hydra.run.dir=/runs/a"]
    child = [*user, 'hydra.run.dir="/runs/a"', "hydra.job.name=train_ddp_process_1", "hydra.output_subdir=null"]
    assert typed_overrides(child) == user and repeated_keys_message(typed_overrides(child)) is None
    typed_twice = ["hydra.run.dir=/runs/a", "hydra.run.dir=/runs/b", "hydra.output_subdir=null"]
    assert typed_overrides(typed_twice) == typed_twice  # no Lightning tail: checked whole


@pytest.mark.slow
def test_every_log_line_is_printed_once(tmp_path):
    done = clip_train("debug=fast", "trainer.max_steps=1", "trainer.val_check_interval=1", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-3000:]
    printed = done.stdout + done.stderr
    for line in ("Seed set to 0", "`Trainer.fit` stopped: `max_steps=1` reached."):
        assert printed.count(line) == 1, f"{line!r} printed {printed.count(line)} times"
