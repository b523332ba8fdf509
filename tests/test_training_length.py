"""The learning-rate schedule's length: right for max_steps, max_epochs and both; an endless run is refused.

Training by epochs once set the rate to 0 right after warm-up: the stream has no length, so
Lightning's `estimated_stepping_batches` returned max_steps = -1 as the schedule's total.
"""

import csv
import math

import pytest

from clip_train.train import run
from clip_train.training.training_length import total_optimizer_steps

WARMUP = 3
# colour_shards: 40 samples; batch 8 on one rank with no workers -> 5 batches (optimizer steps) per epoch
SHARDS_RUN = ("data=webdataset", "data.batch_size=8", "data.num_workers=0", "model=test", "logger=csv",
              "trainer.log_every_n_steps=1", "trainer.limit_val_batches=0", "trainer.enable_progress_bar=false",
              "eval=none", f"optim.scheduler.warmup_steps={WARMUP}", "optim.optimizer.lr=1e-3")  # fmt: skip


def reference_rates(base: float, warmup: int, total: int, steps: int) -> list[float]:
    """Linear warm-up over `warmup` steps, then cosine from `base` to 0 at `total`: the rate of steps 0..steps-1."""
    rates = []
    for step in range(steps):
        if step < warmup:
            rates.append(base * (step + 1) / warmup)
        else:
            rates.append(base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup))))
    return rates


def logged_rates(output_dir) -> list[float]:
    with open(output_dir / "csv" / "metrics.csv") as f:
        return [float(row["lr"]) for row in csv.DictReader(f) if row.get("lr")]


@pytest.mark.parametrize(
    ("limits", "expected_total", "steps_run"),
    [
        (("trainer.max_steps=-1", "trainer.max_epochs=2"), 10, 10),  # by epochs: 2 × 5 batches
        (("trainer.max_steps=7", "trainer.max_epochs=2"), 7, 7),  # both: the smaller
        (("trainer.max_steps=8", "trainer.max_epochs=-1"), 8, 8),  # by steps
    ],
)
def test_schedule_spans_the_run_whatever_limits_it(compose_config, colour_shards, tmp_path, limits, expected_total, steps_run):
    out = tmp_path / "out"
    run(compose_config(*SHARDS_RUN, f"data.train_shards='{colour_shards}'", *limits, f"paths.output_dir={out}"))
    rates = logged_rates(out)
    assert len(rates) == steps_run
    expected = reference_rates(1e-3, WARMUP, expected_total, steps_run)
    assert rates == pytest.approx(expected, rel=1e-6, abs=1e-12)
    assert min(rates[WARMUP:-1]) > 0  # no step after warm-up runs at a zero rate before the end


def test_an_endless_run_is_refused_naming_both_keys(compose_config, colour_shards):
    cfg = compose_config(*SHARDS_RUN, f"data.train_shards='{colour_shards}'", "trainer.max_steps=-1", "trainer.max_epochs=-1")
    with pytest.raises(ValueError, match=r"trainer\.max_steps and trainer\.max_epochs"):
        run(cfg)


def test_limit_train_batches_shortens_each_epoch():
    assert total_optimizer_steps(-1, 3, batches_per_epoch=10, limit_train_batches=4) == 12
    assert total_optimizer_steps(-1, 3, batches_per_epoch=10, limit_train_batches=0.5) == 15
    assert total_optimizer_steps(20, 3, batches_per_epoch=10, limit_train_batches=1.0) == 20
