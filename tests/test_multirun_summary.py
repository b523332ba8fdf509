"""The multirun summary (clip_train/multirun_summary.py): mean ± sample std of every final metric over seeds
(or checkpoints), grouped by the other swept keys, checked against numbers computed here from each job's files."""

import json
import os
import statistics
import subprocess
import sys

import pytest
import yaml

from clip_train.multirun_summary import markdown, numeric_leaves, summarise


def test_groups_by_the_other_overrides_and_gives_mean_and_sample_std():
    runs = [
        (["seed=0", "loss=infonce"], {"val/R@1": 0.30, "zeroshot/x/per_class": {"red": 1.0}, "name": "text"}),
        (["seed=1", "loss=infonce"], {"val/R@1": 0.36, "zeroshot/x/per_class": {"red": 0.5}}),
        (["seed=2", "loss=infonce"], {"val/R@1": 0.33}),
        (["seed=0", "loss=siglip"], {"val/R@1": 0.20, "nan": float("nan")}),
    ]
    summary = summarise(runs, over=["seed"])
    assert set(summary) == {"loss=infonce", "loss=siglip"}
    infonce = summary["loss=infonce"]["val/R@1"]
    assert infonce["mean"] == pytest.approx(0.33) and infonce["n"] == 3
    assert infonce["std"] == pytest.approx(0.03)  # sqrt(((-.03)² + .03² + 0) / (3 - 1))
    assert summary["loss=infonce"]["zeroshot/x/per_class/red"]["values"] == [1.0, 0.5]  # only the runs that have it
    assert summary["loss=siglip"]["val/R@1"] == {"mean": 0.2, "std": None, "n": 1, "values": [0.2]}
    assert "nan" not in summary["loss=siglip"] and "name" not in summary["loss=infonce"]
    table = markdown(summary)
    assert "| val/R@1 | 0.33 ± 0.03 (n=3): 0.3, 0.36, 0.33 | 0.2 ± – (n=1): 0.2 |" in table


def test_a_sweep_over_seed_only_is_one_group():
    assert list(summarise([(["seed=0"], {"a": 1.0}), (["seed=1"], {"a": 3.0})], over=["seed"])) == ["all"]
    assert numeric_leaves({"a": {"b": {"c": 2}}, "flag": True}) == {"a/b/c": 2.0}


def _jobs(sweep) -> list[tuple[dict, dict]]:
    jobs = []
    for job in sorted(d for d in os.listdir(sweep) if d.isdigit()):
        overrides = yaml.safe_load((sweep / job / ".hydra" / "overrides.yaml").read_text())
        jobs.append((dict(o.split("=", 1) for o in overrides), json.loads((sweep / job / "metrics.json").read_text())))
    return jobs


@pytest.mark.slow
def test_a_training_multirun_over_seeds_ends_with_its_summary(tmp_path):
    sweep = tmp_path / "sweep"
    done = subprocess.run(
        [sys.executable, "-m", "clip_train", "--multirun", "debug=fast", "seed=0,1", "loss=infonce,siglip",
         "trainer.max_steps=2", "trainer.val_check_interval=2", "data.synthetic.num_train=64",
         "data.synthetic.num_val=32", "data.synthetic.samples_per_shard=32", f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, env=os.environ, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((sweep / "summary.json").read_text())
    assert set(summary) == {"loss=infonce", "loss=siglip"}
    jobs = _jobs(sweep)
    assert len(jobs) == 4
    for job, (overrides, metrics) in enumerate(jobs):  # each job its own run: metrics, checkpoint, its loss's parameters
        assert metrics["train/samples_seen"] == 2 * 16 and (sweep / str(job) / "checkpoints" / "last.ckpt").is_file()
        assert ("train/logit_bias" in metrics) == (overrides["loss"] == "siglip")
    for loss in ("infonce", "siglip"):
        values = [metrics["val/image_to_text_R@5"] for overrides, metrics in jobs if overrides["loss"] == loss]
        assert {overrides["seed"] for overrides, _ in jobs if overrides["loss"] == loss} == {"0", "1"}
        got = summary[f"loss={loss}"]["val/image_to_text_R@5"]
        assert got["values"] == values and got["mean"] == pytest.approx(statistics.fmean(values))
        assert got["std"] == pytest.approx(statistics.stdev(values))
    assert "| val/loss |" in (sweep / "summary.md").read_text()
    assert "multirun summary over seed, checkpoint" in done.stdout + done.stderr


@pytest.mark.slow
def test_an_evaluation_multirun_over_checkpoints_ends_with_its_summary(tmp_path, trained_checkpoint):
    checkpoints = os.path.dirname(trained_checkpoint)
    step = next(name for name in os.listdir(checkpoints) if name.startswith("step"))
    sweep = tmp_path / "sweep"
    shards = os.path.join(os.path.dirname(os.path.dirname(checkpoints)), "shards", "train-{00000..00003}.tar")
    done = subprocess.run(
        [sys.executable, "-m", "clip_train.evaluate", "--multirun", f"checkpoint={trained_checkpoint},{checkpoints}/{step}",
         "eval=none", f"eval.tasks.retrieval.shards='{shards}'", "eval.num_workers=0", f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, env=os.environ, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (group,) = json.loads((sweep / "summary.json").read_text()).values()
    values = [metrics["retrieval/image_to_text_R@1"] for _, metrics in _jobs(sweep)]
    assert group["retrieval/image_to_text_R@1"]["values"] == values and len(values) == 2
    assert values[0] == values[1] and group["retrieval/image_to_text_R@1"]["std"] == 0  # the same weights twice
