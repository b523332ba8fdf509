"""The shipped `trainer=fsdp` preset (FSDP2) on 2 gloo processes on the CPU, with only the accelerator and
the device count overridden: against DDP on the same seed and batches, and through the whole life of a run
(train, validate, zero-shot, checkpoint, resume, load, evaluate, export, caption)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from faults import read_lines

import clip_train
from clip_train.checkpoint_file import read_checkpoint
from clip_train.export import main as export_main

TESTS = os.path.dirname(__file__)
ON_CPU = ("trainer.accelerator=cpu", "trainer.devices=2")
TEXTS = ["a red square", "a blue circle", "a green triangle"]


def _fit(run_dir, *overrides: str, logger: str = "[]") -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "clip_train", "debug=fast", *ON_CPU, f"logger={logger}",
               "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}", *overrides]  # fmt: skip
    env = os.environ | {"PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def _weights(checkpoint) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint file or sharded checkpoint folder, whole."""
    return read_checkpoint(str(checkpoint), "test")["state_dict"]


def _evaluate(checkpoint: str, out_dir) -> dict:
    """`python -m clip_train.evaluate` on the drawn zero-shot sets, as debug=fast's validation runs them (the tasks
    run after the validation steps, outside the trainer's autocast: in float32)."""
    command = [sys.executable, "-m", "clip_train.evaluate", f"checkpoint={checkpoint}",
               "eval.images_per_class=4", "eval.num_workers=0", "eval.progress=false", f"hydra.run.dir={out_dir}"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((out_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_fsdp_gradients_and_weights_equal_ddp_on_the_same_seed_and_batches(tmp_path):
    """fp32: the first step's gathered FSDP gradients (with 2 exact micro-batches, so gradients are reduced once)
    equal DDP's whole-batch ones, the temperature's included; after 3 AdamW steps the full checkpoints agree."""
    runs = {
        "ddp": ("trainer=ddp",),
        "fsdp": ("trainer=fsdp", "optim.accumulate=2"),
    }
    for name, preset in runs.items():
        _fit(tmp_path / name, *preset, "trainer.precision=32-true", "trainer.max_steps=3", "trainer.limit_val_batches=0",
             "+callbacks.grads._target_=faults.GradientDump", f"+callbacks.grads.path={tmp_path}/{name}.pt")  # fmt: skip
    ddp, fsdp = (torch.load(tmp_path / f"{name}.pt") for name in runs)
    assert fsdp.keys() == ddp.keys() and "logit_scale" in ddp
    for name in ddp:
        torch.testing.assert_close(fsdp[name], ddp[name], rtol=1e-4, atol=1e-6, msg=name)
    ddp_state, fsdp_state = (_weights(tmp_path / name / "checkpoints" / "last.ckpt") for name in runs)
    assert fsdp_state.keys() == ddp_state.keys()
    for name in ddp_state:
        torch.testing.assert_close(fsdp_state[name], ddp_state[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("state_dict_type,precision", [("full", []), ("sharded", ["trainer.precision=bf16-mixed"])])
def test_fsdp_preset_run_resumes_exactly_and_its_checkpoint_loads_evaluates_and_exports(tmp_path, state_dict_type, precision):
    """The preset as shipped (its precision follows the accelerator: float32 on the CPU), and with bf16 autocast as on
    a GPU: 6 steps with validation and zero-shot every 3 and a checkpoint at step 3 (one file, or a folder of shards);
    resumed from that checkpoint in a new folder, steps 4-6 see the same batches with the same losses on both ranks
    and end on the same weights. The last checkpoint, read in one process, zero-shot classifies as the sharded run's
    own validation did, and its export encodes as it does."""
    preset = ("trainer=fsdp", f"trainer.strategy.state_dict_type={state_dict_type}", *precision)
    log = ("+callbacks.log._target_=faults.BatchLog", "callbacks.model_checkpoint.every_n_train_steps=3")
    _fit(tmp_path / "run", *preset, *log, f"+callbacks.log.path={tmp_path}/run.jsonl")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train/samples_seen"] == 6 * 16 * 2 and metrics["train/skipped_steps"] == 0
    assert 0 <= metrics["val/image_to_text_R@1"] <= 1

    checkpoints = tmp_path / "run" / "checkpoints"
    assert (checkpoints / "last.ckpt").is_dir() == (state_dict_type == "sharded")
    _fit(tmp_path / "resumed", *preset, *log, f"+callbacks.log.path={tmp_path}/resumed.jsonl",
         f"ckpt_path={checkpoints}/step00000003.ckpt")  # fmt: skip
    first, again = read_lines(tmp_path / "run.jsonl"), read_lines(tmp_path / "resumed.jsonl")
    expected = sorted((r for r in first if r["step"] > 3), key=lambda r: (r["step"], r["rank"]))
    again = sorted(again, key=lambda r: (r["step"], r["rank"]))
    assert [(r["step"], r["rank"]) for r in again] == [(step, rank) for step in (4, 5, 6) for rank in (0, 1)]
    for resumed, straight in zip(again, expected):
        assert resumed["keys"] == straight["keys"]
        assert resumed["loss"] == pytest.approx(straight["loss"], rel=1e-6)
    last = str(checkpoints / "last.ckpt")
    torch.testing.assert_close(_weights(tmp_path / "resumed" / "checkpoints" / "last.ckpt"), _weights(last))

    evaluated = _evaluate(last, tmp_path / "evaluate")
    for name in ("zeroshot/shapes/top1", "zeroshot/colours/top1"):
        assert evaluated[name] == pytest.approx(metrics[name], abs=1e-6), name
    texts = clip_train.load(last).encode_text(TEXTS)
    export_main([f"checkpoint={last}", f"out={tmp_path}/export"])
    torch.testing.assert_close(clip_train.load(str(tmp_path / "export")).encode_text(TEXTS), texts, rtol=0, atol=0)


@pytest.mark.slow
def test_a_coca_model_trains_and_captions_under_fsdp(tmp_path):
    """CoCa (SigLIP contrastive term, so `logit_bias` is sharded too): validation captions its images on gathered
    weights, and the sharded run's caption scores come out of the same greedy decoding as the DDP run's."""
    scores, captions = {}, {}
    for preset in ("ddp", "fsdp"):
        _fit(tmp_path / preset, f"trainer={preset}", "trainer.precision=32-true", "model=coca_test", "loss=coca_siglip",
             "trainer.max_steps=3", logger="[csv]")  # fmt: skip
        metrics = json.loads((tmp_path / preset / "metrics.json").read_text())
        scores[preset] = {name: metrics[name] for name in ("val/bleu4", "val/cider", "train/logit_bias")}
        logged = read_lines(tmp_path / preset / "csv" / "captions.jsonl")
        assert logged[-1]["step"] == 3 and len(logged[-1]["examples"]) == 8
        captions[preset] = logged[-1]["examples"]
    assert captions["fsdp"] == captions["ddp"]
    assert scores["fsdp"] == pytest.approx(scores["ddp"], rel=1e-4, abs=1e-6)
