"""Runs that survive: kill -9 (even mid-save) and SIGTERM, then resume exactly; NaN steps skipped.

The runs are real `python -m clip_train` processes on 4 shards of 10 samples (keys 0..39), 5 per
batch, 2 workers: an epoch is 8 batches, 4 per worker. The faults come from test-only callbacks
(tests/faults.py) added on the command line.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from faults import read_lines

from clip_train.build import build_datamodule
from clip_train.cli import quote_shard_ranges
from clip_train.data.position import ResumePoint

TESTS = os.path.dirname(__file__)
ALL_KEYS = sorted(f"{i:09d}" for i in range(40))


def _command(run_dir, shards, *overrides: str) -> list[str]:
    return [
        sys.executable, "-m", "clip_train", "model=test", "data=webdataset", f"data.train_shards={shards}",
        "data.batch_size=5", "data.num_workers=2", "data.shuffle_buffer=8", "data.tokenizer_vocab_size=300",
        "trainer.accelerator=cpu", "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false", "logger=[]",
        f"hydra.run.dir={run_dir}", "+callbacks.log._target_=faults.BatchLog", f"+callbacks.log.path={run_dir}/batches.jsonl",
        *overrides,
    ]  # fmt: skip


def _env() -> dict:
    return os.environ | {"PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}


def _run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=600)


def _global_step(path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["global_step"]


def _by_step(records: list[dict], upto: int) -> list[dict]:
    return [r for r in records if r["step"] <= upto]


@pytest.mark.slow
def test_kill_during_a_save_keeps_the_previous_checkpoint_and_the_resume_repeats_and_skips_no_sample(tmp_path, colour_shards):
    """Resampling off: SIGKILL while last.ckpt is half written at step 12 (checkpoints every 3 steps); the
    previous last.ckpt (step 9, mid-epoch 1 at an odd batch) still loads; the explicit resume from step 9
    gives every key exactly once in each of the 2 epochs, and the replayed steps 10-12 the same losses."""
    run_dir = tmp_path / "run"
    settings = ("trainer.max_steps=16", "callbacks.model_checkpoint.every_n_train_steps=3")
    ready = tmp_path / "stalled"
    stalled = subprocess.Popen(
        _command(run_dir, colour_shards, *settings, "+callbacks.stall._target_=faults.StallCheckpointWrite",
                 "+callbacks.stall.after_step=10", "+callbacks.stall.name=last.ckpt", f"+callbacks.stall.ready={ready}"),
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while not ready.exists() and stalled.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ready.exists(), stalled.stderr.read()[-3000:] if stalled.poll() is not None else "no stalled save"
    stalled.send_signal(signal.SIGKILL)
    stalled.wait()
    checkpoints = run_dir / "checkpoints"
    assert any(name.startswith("last.ckpt.partial-") for name in os.listdir(checkpoints))  # the save was cut short
    assert _global_step(checkpoints / "last.ckpt") == 9
    killed = read_lines(run_dir / "batches.jsonl")
    assert [r["step"] for r in killed] == list(range(1, 13))
    os.rename(run_dir / "batches.jsonl", tmp_path / "killed.jsonl")

    resumed = _run(_command(run_dir, colour_shards, *settings, f"ckpt_path={checkpoints}/step00000009.ckpt"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = read_lines(run_dir / "batches.jsonl")
    assert (after[0]["step"], after[0]["epoch"], after[0]["batch_idx"]) == (10, 1, 1)
    combined = _by_step(killed, 9) + after
    assert [r["step"] for r in combined] == list(range(1, 17))
    for epoch in (0, 1):
        keys = [key for r in combined if r["epoch"] == epoch for key in r["keys"]]
        assert sorted(keys) == ALL_KEYS, f"epoch {epoch}: repeated or skipped keys"
    for again, first in zip(after[:3], killed[9:12]):  # model, optimizer, schedule, RNG and data all restored
        assert again["keys"] == first["keys"]
        assert again["loss"] == pytest.approx(first["loss"], rel=1e-6)
    assert not any(".partial-" in name for name in os.listdir(checkpoints))  # the next save cleared it
    assert _global_step(checkpoints / "last.ckpt") == 16  # saved at the end, though 16 is no multiple of 3


@pytest.mark.slow
def test_extending_a_finished_run_continues_its_epoch_and_reads_each_sample_once(tmp_path, colour_shards):
    """The same command rerun with a larger trainer.max_steps extends the run: stopped at step 2 (mid-epoch 0),
    then at 8 (epoch 0's last batch), then at 12 (mid-epoch 1), and extended to 16. Each epoch's 8 steps read every
    key exactly once, and the steps are logged in order with their epochs."""
    run_dir = tmp_path / "run"
    for max_steps in (2, 8, 12, 16):
        extended = _run(_command(run_dir, colour_shards, f"trainer.max_steps={max_steps}"))
        assert extended.returncode == 0, extended.stderr[-3000:]
        assert _global_step(run_dir / "checkpoints" / "last.ckpt") == max_steps
    steps = read_lines(run_dir / "batches.jsonl")
    assert [(r["step"], r["epoch"]) for r in steps] == [(step, (step - 1) // 8) for step in range(1, 17)]
    for epoch in (0, 1):
        keys = [key for r in steps if r["epoch"] == epoch for key in r["keys"]]
        assert sorted(keys) == ALL_KEYS, f"epoch {epoch}: repeated or skipped keys"


def _uninterrupted_keys(compose_config, shards: str, epochs: int) -> list[list[str]]:
    """The training stream's batches of keys, straight from the data module: no trainer, no interruption."""
    cfg = compose_config(
        *quote_shard_ranges([f"data.train_shards={shards}"]), "model=test", "data=webdataset", "data.batch_size=5",
        "data.num_workers=2", "data.shuffle_buffer=8", "data.tokenizer_vocab_size=300", "data.resampled=true",
    )  # fmt: skip
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    batches = []
    for epoch in range(epochs):
        datamodule.set_epoch(epoch)
        batches += [list(batch["key"]) for batch in loader]
    return batches


@pytest.mark.slow
def test_sigterm_saves_then_the_same_command_resumes_the_resampled_stream_exactly(tmp_path, colour_shards, compose_config):
    """Resampling on: SIGTERM during step 4 saves last.ckpt after step 5 (an odd batch of epoch 0) and exits
    with 128+15 (before the batch log records step 5); the same command resumes there, and the keys of every
    step equal the uninterrupted stream's."""
    run_dir = tmp_path / "run"
    command = _command(
        run_dir, colour_shards, "data.resampled=true", "trainer.max_steps=10",
        "+callbacks.term._target_=faults.SignalAt", "+callbacks.term.step=4", "+callbacks.term.signal=SIGTERM",
    )  # fmt: skip
    stopped = _run(command)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert _global_step(run_dir / "checkpoints" / "last.ckpt") == 5

    resumed = _run(command)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    steps = read_lines(run_dir / "batches.jsonl")
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 6, 7, 8, 9, 10]
    expected = _uninterrupted_keys(compose_config, colour_shards, epochs=2)
    assert [r["keys"] for r in steps] == expected[:4] + expected[5:10]


@pytest.mark.parametrize("batches", [6, 7, 8])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_resume_plan_continues_the_round_robin_order_of_the_uninterrupted_loader(workers, batches):
    """Worker w's stream is (w, 0), (w, 1), ... of `len(range(w, batches, workers))` batches (the first
    batches mod workers have one more); a DataLoader takes one batch from each worker slot in turn, dropping
    slots that are exhausted. After a resume at any batch count n, the rotated slots with their skips must
    give the rest of the uninterrupted sequence."""

    def round_robin(streams: list[list]) -> list:
        out, queues = [], [list(s) for s in streams]
        while any(queues):
            out += [q.pop(0) for q in queues if q]
        return out

    def quota(worker: int) -> int:
        return len(range(worker, batches, workers))

    uninterrupted = round_robin([[(w, i) for i in range(quota(w))] for w in range(workers)])
    assert [w for w, _ in uninterrupted] == [i % workers for i in range(batches)]
    for consumed in range(batches + 1):
        point = ResumePoint()
        point.set(epoch=3, batches=consumed)
        streams = []
        for slot in range(workers):
            logical, skipped = point.plan(3, slot, workers)
            streams.append([(logical, i) for i in range(skipped, quota(logical))])
        assert round_robin(streams) == uninterrupted[consumed:], consumed
        assert point.plan(4, 0, workers) == (0, 0)  # the next epoch starts from scratch


def test_augmentation_draws_repeat_for_a_seed_and_differ_between_the_images_of_a_batch():
    from clip_train.data.position import seeded_torch
    from clip_train.data.transforms import train_crop

    transform = train_crop(16, crop_scale=(0.3, 1.0))
    image = torch.arange(64, dtype=torch.uint8).mul(4).expand(3, 64, 64)  # a horizontal gradient
    torch.manual_seed(0)
    outside = torch.rand(1)
    torch.manual_seed(0)
    with seeded_torch(7):
        first = [transform(image) for _ in range(3)]
    assert torch.equal(torch.rand(1), outside)  # the caller's random state is untouched
    with seeded_torch(7):
        again = [transform(image) for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], first[1])
