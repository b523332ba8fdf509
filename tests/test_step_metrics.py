"""What a training step logs: `train/grad_norm` is the true pre-clip norm, `train/mfu` follows from the
logged throughput, FLOPs are counted without touching the model, and no Python number is logged
(Lightning would copy it to the device, which on CUDA waits for the queued work)."""

import copy
import csv
import math

import lightning as L
import pytest
import torch
from helpers import make_batch, small_encoder
from lightning.pytorch.loggers import CSVLogger
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from clip_train.objectives import InfoNCE, infonce_loss
from clip_train.training.callbacks import ThroughputMonitor
from clip_train.training.flops import training_flops_per_sample
from clip_train.training.module import ClipModule
from clip_train.training.optim import cosine_with_warmup

STEPS = 4


class PreClipNorms(L.Callback):
    """Each batch's gradient norm, from its own copy of the model: sqrt of every gradient entry squared, summed."""

    def __init__(self) -> None:
        self.norms = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        model = copy.deepcopy(pl_module.model)
        image, text = model(batch)
        infonce_loss(image, text, model.logit_scale).backward()
        self.norms.append(math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in model.parameters())))


def fit(tmp_path, callbacks, clip=1e-3):
    torch.manual_seed(0)
    module = ClipModule(
        small_encoder(),
        InfoNCE(),
        optimizer=lambda params: torch.optim.AdamW(params, lr=1e-3, fused=True),
        scheduler=lambda optimizer, total_steps: cosine_with_warmup(optimizer, 1, total_steps),
        gradient_clip_norm=clip,
    )
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=STEPS, logger=CSVLogger(tmp_path, name="", version=""),
        log_every_n_steps=1, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=callbacks,
    )  # fmt: skip
    data = [{k: v.float() if k == "image" else v for k, v in make_batch(seed=i).items()} for i in range(STEPS)]
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=None))
    with open(tmp_path / "metrics.csv", newline="") as f:
        return module, list(csv.DictReader(f))


@pytest.mark.slow
def test_grad_norm_is_the_total_norm_before_clipping(tmp_path):
    norms = PreClipNorms()
    _, rows = fit(tmp_path, [norms], clip=1e-3)  # the norms are far above 1e-3: every step clips
    logged = [float(row["train/grad_norm"]) for row in rows if row.get("train/grad_norm")]
    assert len(logged) == STEPS and min(logged) > 1.0
    assert logged == pytest.approx(norms.norms, rel=1e-4)


@pytest.mark.slow
def test_mfu_is_flops_times_samples_per_second_over_the_peak(tmp_path):
    monitor = ThroughputMonitor(window=2)
    module, rows = fit(tmp_path, [monitor])
    assert monitor.flops_per_sample == training_flops_per_sample(module.model) and monitor.peak_flops > 1e8
    timed = [row for row in rows if row.get("train/mfu")]
    assert len(timed) == STEPS - 1  # the first batch's end starts the clock
    for row in timed:
        expected = monitor.flops_per_sample * float(row["train/samples_per_sec"]) / monitor.peak_flops
        assert float(row["train/mfu"]) == pytest.approx(expected, rel=1e-6)
        assert 0 < float(row["train/mfu"]) < 1


def test_flops_are_counted_on_a_copy_and_match_a_count_on_the_real_model():
    torch.manual_seed(0)
    model = small_encoder()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    counted = training_flops_per_sample(model)
    assert all(p.grad is None and torch.equal(p, before[name]) for name, p in model.named_parameters())
    batch = {k: v.float() if k == "image" else v for k, v in make_batch(size=2).items()}
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):  # attention as matmuls, which the counter sees on any device
        image, text = model(batch)
        infonce_loss(image, text, model.logit_scale).backward()
    assert counted == pytest.approx(counter.get_total_flops() / 2, rel=1e-3)


@pytest.mark.slow
def test_a_training_step_logs_no_python_numbers(tmp_path, monkeypatch):
    numbers = []
    to_tensor = L.LightningModule._LightningModule__to_tensor

    def spy(self, value, name):
        if not isinstance(value, torch.Tensor):
            numbers.append(name)
        return to_tensor(self, value, name)

    monkeypatch.setattr(L.LightningModule, "_LightningModule__to_tensor", spy)
    _, rows = fit(tmp_path, [ThroughputMonitor(window=2)])
    assert rows and numbers == []
