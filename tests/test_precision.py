"""bf16 mixed precision on the CPU (autocast): the loss stays close to fp32 and the model still learns."""

import csv

import pytest
import torch
from helpers import make_batch, small_encoder

from clip_train.objectives import infonce_loss
from clip_train.train import run


def test_bf16_autocast_loss_is_close_to_fp32():
    torch.manual_seed(0)
    model = small_encoder()
    batch = {key: value.float() if key == "image" else value for key, value in make_batch().items()}
    with torch.no_grad():
        full = infonce_loss(*model(batch), model.logit_scale)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            image, text = model(batch)
            mixed = infonce_loss(image, text, model.logit_scale)
    assert image.dtype == torch.bfloat16  # the towers did run in bf16
    assert mixed.dtype == torch.float32
    assert abs(float(mixed) - float(full)) < 0.02 * float(full)


@pytest.mark.slow
def test_bf16_mixed_training_learns(compose_config, colour_shards, tmp_path):
    cfg = compose_config(
        "data=webdataset",
        f"data.train_shards='{colour_shards}'",
        "data.batch_size=8",
        "data.num_workers=0",
        "model=test",
        "trainer.precision=bf16-mixed",
        "trainer.max_steps=40",
        "trainer.log_every_n_steps=1",
        "optim.optimizer.lr=2e-3",
        "optim.scheduler.warmup_steps=5",
        f"paths.output_dir={tmp_path}",
    )
    run(cfg)
    with open(tmp_path / "csv" / "metrics.csv") as f:
        losses = [float(row["train/loss"]) for row in csv.DictReader(f) if row.get("train/loss")]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5  # four colours: quickly separable
