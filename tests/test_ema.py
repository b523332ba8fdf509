"""The EMA of the weights (optim.ema.decay): the average against a naive one computed by hand from the weights
after each step, in a real run and its checkpoint; the loaded (and exported) model is the average; a resumed run
continues the same average; validation scores the average; two DDP processes keep the same one."""

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import make_batch, small_encoder
from hydra import compose, initialize_config_dir

import clip_train
from clip_train.evaluate import run as evaluate
from clip_train.paths import CONFIG_DIR
from clip_train.train import run as train
from clip_train.training.ema import WeightAverage

TESTS = os.path.dirname(__file__)
DECAY = 0.6


def naive_average(states: list[dict], decay: float) -> dict:
    """average_0 = state_0; average_t = decay * average_{t-1} + (1 - decay) * state_t, tensor by tensor."""
    average = {name: value.double() for name, value in states[0].items()}
    for state in states[1:]:
        average = {name: decay * average[name] + (1 - decay) * state[name].double() for name in average}
    return average


def assert_close_states(actual: dict, expected: dict, prefix: str = "") -> None:
    assert {name.removeprefix(prefix) for name in actual} == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(actual[prefix + name].double(), value, rtol=0, atol=1e-6, msg=name)


def test_the_average_follows_the_naive_formula_and_a_swap_gives_the_weights_back():
    torch.manual_seed(0)
    model = small_encoder()
    average = WeightAverage(model, DECAY)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    states = [{name: value.clone() for name, value in model.state_dict().items()}]
    for seed in range(3):
        batch = make_batch(4, seed) | {"image": make_batch(4, seed)["image"].float()}
        image, text = model(batch)
        (image @ text.T).logsumexp(-1).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        average.update(model)
        states.append({name: value.clone() for name, value in model.state_dict().items()})
    assert_close_states(average.average, naive_average(states, DECAY))
    with average.swapped_in(model):
        assert_close_states(model.state_dict(), naive_average(states, DECAY))
    assert_close_states(model.state_dict(), {name: value.double() for name, value in states[-1].items()})
    with pytest.raises(ValueError, match="optim.ema.decay=1"):
        WeightAverage(model, 1.0)


def _overrides(run_dir, shards: str, *more: str) -> list[str]:
    return [
        f"paths.output_dir={run_dir}", "data=webdataset", f"data.train='{shards}'", f"data.val='{shards}'",
        "data.batch_size=8", "data.num_workers=0", "data.tokenizer_vocab_size=300", "model=test", "logger=[]",
        "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false", f"optim.ema.decay={DECAY}",
        "optim.optimizer.lr=1e-2", "optim/scheduler=const", "optim.scheduler.warmup_steps=1", "eval=none",
        "+callbacks.weights._target_=faults.StepWeights",
        f"+callbacks.weights.path={run_dir}/weights", *more,
    ]  # fmt: skip


def _train(run_dir, shards: str, *more: str) -> dict:
    sys.path.insert(0, TESTS) if TESTS not in sys.path else None
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return train(compose("train", overrides=_overrides(run_dir, shards, *more)))


@pytest.mark.slow
def test_a_run_keeps_saves_resumes_validates_and_loads_the_naive_average(tmp_path, colour_shards):
    metrics = _train(tmp_path / "run", colour_shards, "trainer.max_steps=4", "ckpt_path=null")
    states = torch.load(tmp_path / "run" / "weights.rank0.pt", weights_only=False)
    assert len(states) == 5  # the start, then after each of 4 steps
    expected = naive_average(states, DECAY)
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert_close_states(checkpoint["ema_state_dict"], expected, prefix="model.")
    assert_close_states(checkpoint["state_dict"], {k: v.double() for k, v in states[-1].items()}, prefix="model.")
    moved = max((states[-1][name].double() - value).abs().max().item() for name, value in expected.items())
    assert moved > 1e-3  # the average is not the weights: the checks below could tell them apart

    loaded = clip_train.load(str(tmp_path / "run" / "checkpoints" / "last.ckpt"))
    assert_close_states(loaded.state_dict(), expected)

    os.makedirs(tmp_path / "eval")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        scored = evaluate(compose("evaluate", overrides=[
            f"checkpoint={tmp_path}/run/checkpoints/last.ckpt", f"paths.output_dir={tmp_path}/eval", "eval=none",
            f"eval.tasks.retrieval.shards='{colour_shards}'",
        ]))  # fmt: skip
    assert scored["retrieval/loss"] == pytest.approx(metrics["val/loss"], abs=1e-4)  # validation scored the average

    _train(tmp_path / "first", colour_shards, "trainer.max_steps=2", "ckpt_path=null")
    _train(tmp_path / "first", colour_shards, "trainer.max_steps=4", "ckpt_path=last")
    resumed = torch.load(tmp_path / "first" / "checkpoints" / "last.ckpt", weights_only=False)
    assert_close_states(resumed["ema_state_dict"], expected, prefix="model.")


@pytest.mark.slow
def test_two_ddp_processes_keep_the_same_naive_average(tmp_path, colour_shards):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "clip_train", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
               "trainer.max_steps=3", f"hydra.run.dir={run_dir}", *_overrides(run_dir, colour_shards)]  # fmt: skip
    env = os.environ | {"PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(run_dir / f"weights.rank{rank}.pt", weights_only=False) for rank in (0, 1)]
    for first, second in zip(*ranks):
        assert_close_states(first, {name: value.double() for name, value in second.items()})
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert_close_states(checkpoint["ema_state_dict"], naive_average(ranks[0], DECAY), prefix="model.")
    assert json.loads((run_dir / "metrics.json").read_text())["train/samples_seen"] == 3 * 8 * 2
