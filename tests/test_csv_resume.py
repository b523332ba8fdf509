"""A resumed run's `csv/metrics.csv` holds the whole curve: the rows logged before the stop, then the resumed run's,
each step once, equal (step and train/loss) to the rows of a run that was never stopped. Resume is exact, so the
uninterrupted run is the reference. Lightning's own CSVLogger deleted the earlier rows when the run resumed."""

import csv
import os
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tiny_vlm import StopAfter, square_records, tiny_vlm, write_records

from clip_train.data.transforms import CLIP_MEAN, CLIP_STD, eval_transform
from clip_train.paths import CONFIG_DIR
from clip_train.train import run
from clip_train.vlm.conversation_source import ConversationSource
from clip_train.vlm.stages import train_stage

TESTS = os.path.dirname(__file__)


def _losses(path) -> dict[int, float]:
    """{step: train/loss} of the rows of a metrics.csv that have a loss; a step logged twice fails."""
    with open(path, newline="") as f:
        rows = [row for row in csv.DictReader(f) if row.get("train/loss")]
    steps = [int(row["step"]) for row in rows]
    assert len(steps) == len(set(steps)), f"{path}: a step is logged twice: {steps}"
    return {int(row["step"]): float(row["train/loss"]) for row in rows}


def _assert_same_curve(resumed: dict[int, float], whole: dict[int, float]) -> None:
    assert sorted(resumed) == sorted(whole)
    for step in whole:
        assert resumed[step] == pytest.approx(whole[step], abs=1e-6), step


def _vlm_stage(run_dir: str, data: str, callbacks=(), steps: int = 6) -> None:
    """`steps` steps of the tiny VLM on 2 squares per step, a checkpoint every 2 steps, a row logged every step."""
    settings = OmegaConf.create({"steps": steps, "lr": 3e-3, "weight_decay": 0.01, "warmup_steps": 1, "lm": "full",
                                 "lora_rank": 8, "checkpoint_every_n_steps": 2})  # fmt: skip
    model, tokenizer = tiny_vlm()
    source = ConversationSource.of(data, "data.train", rows_per_unit=4)
    trainer = {"accelerator": "cpu", "enable_progress_bar": False, "log_every_n_steps": 1}
    train_stage("instruct", model, tokenizer, source, eval_transform(32, CLIP_MEAN, CLIP_STD), settings, trainer, run_dir,
                batch_size=2, num_workers=0, callbacks=callbacks)  # fmt: skip


def _squares(folder) -> str:
    """8 LLaVA records of coloured squares (`square_records`); the JSON file's path."""
    return write_records(str(folder / "squares.json"), square_records(str(folder), 8))


def test_a_resumed_vlm_stage_logs_the_rows_of_an_uninterrupted_one(tmp_path):
    """Stopped after step 3 with its last checkpoint at step 2: the row of step 3 (index 2) on disk is the
    killed run's, logged again by the resumed run, so it must be replaced, not doubled."""
    data = _squares(tmp_path)
    _vlm_stage(str(tmp_path / "whole"), data)
    _vlm_stage(str(tmp_path / "stopped"), data, callbacks=[StopAfter(3)])
    stopped = tmp_path / "stopped/instruct"
    assert torch.load(stopped / "checkpoints/last.ckpt", weights_only=False)["global_step"] == 2
    assert sorted(_losses(stopped / "csv/metrics.csv")) == [0, 1, 2]  # step 2 (index) lies after the checkpoint
    _vlm_stage(str(tmp_path / "stopped"), data)
    whole = _losses(tmp_path / "whole/instruct/csv/metrics.csv")
    assert sorted(whole) == list(range(6))
    _assert_same_curve(_losses(stopped / "csv/metrics.csv"), whole)


def _clip_overrides(run_dir, shards) -> list[str]:
    """The test preset on the 40 colour squares, 5 per step, 7 steps, a checkpoint every 3 steps, a row every step."""
    return [
        "model=test", "data=webdataset", f"data.train_shards='{shards}'", "data.batch_size=5", "data.num_workers=0",
        "data.tokenizer_vocab_size=300", "trainer.accelerator=cpu", "trainer.max_steps=7", "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false", "callbacks.model_checkpoint.every_n_train_steps=3", "logger=csv",
        f"paths.output_dir={run_dir}",
    ]  # fmt: skip


def _run_in_process(overrides: list[str]) -> None:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        run(compose("train", overrides=overrides))


@pytest.mark.slow
def test_a_clip_run_killed_and_resumed_logs_the_rows_of_an_uninterrupted_one(tmp_path, colour_shards):
    """`python -m clip_train` killed with SIGKILL after step 5 (last checkpoint: step 3), then resumed by `run`
    (ckpt_path=last). Rows are indexed from 0: the killed run left rows 0-3 on disk (row 4 was not logged yet), of
    which row 3 lies after the checkpoint; the resumed run logs rows 3-6, so its row 3 must replace the old one."""
    _run_in_process(_clip_overrides(tmp_path / "whole", colour_shards))
    killed_dir = tmp_path / "killed"
    command = [sys.executable, "-m", "clip_train", *_clip_overrides(killed_dir, colour_shards),
               f"hydra.run.dir={killed_dir}", "+callbacks.kill._target_=faults.KillAt", "+callbacks.kill.step=5"]  # fmt: skip
    env = os.environ | {"PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert torch.load(killed_dir / "checkpoints/last.ckpt", weights_only=False)["global_step"] == 3
    assert sorted(_losses(killed_dir / "csv/metrics.csv")) == [0, 1, 2, 3]
    _run_in_process(_clip_overrides(killed_dir, colour_shards))
    whole = _losses(tmp_path / "whole/csv/metrics.csv")
    assert sorted(whole) == list(range(7))
    _assert_same_curve(_losses(killed_dir / "csv/metrics.csv"), whole)


def test_a_stage_that_does_not_resume_replaces_a_stale_metrics_csv(tmp_path):
    """No checkpoint in the folder: the rows of an earlier run are dropped, as Lightning's CSVLogger drops them."""
    stale = tmp_path / "run/instruct/csv/metrics.csv"
    stale.parent.mkdir(parents=True)
    stale.write_text("stale,step\n" + "".join(f"1.0,{step}\n" for step in range(10)))
    _vlm_stage(str(tmp_path / "run"), _squares(tmp_path), steps=2)
    assert sorted(_losses(stale)) == [0, 1]
    assert "stale" not in stale.read_text().splitlines()[0]


def test_a_resumed_stage_refuses_a_metrics_csv_it_cannot_continue_and_leaves_it(tmp_path):
    """A step that is not a number: the resumed stage names the file and line before training, and the file stays."""
    data = _squares(tmp_path)
    _vlm_stage(str(tmp_path / "run"), data, callbacks=[StopAfter(2)])
    log = tmp_path / "run/instruct/csv/metrics.csv"
    lines = log.read_text().splitlines()
    step = lines[0].split(",").index("step")
    lines[2] = ",".join("two" if index == step else value for index, value in enumerate(lines[2].split(",")))
    log.write_text("\n".join(lines) + "\n")
    before = log.read_text()
    with pytest.raises(ValueError, match=r"metrics\.csv line 3: step 'two' is not an integer"):
        _vlm_stage(str(tmp_path / "run"), data)
    assert log.read_text() == before
