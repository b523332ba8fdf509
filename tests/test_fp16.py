"""fp16 mixed precision with a loss scaler (`precision=16-mixed`), run on the CPU with fp16 autocast.

Lightning unscales gradients only inside `optimizer.step`, so clipping in a manual-optimization
step used to see the scaled norm (×65536) and shrink the update by that factor; and the
finiteness check skipped every overflowing step without letting the scaler back off, so a
run at too high a scale never recovered. Lightning refuses `16-mixed` on a CPU trainer, so the
tests hand it the same plugin it builds on a GPU, with a CPU scaler.
"""

import math

import lightning as L
import torch
from helpers import make_batch, small_encoder
from lightning.pytorch.plugins.precision import MixedPrecision

from clip_train.objectives import InfoNCE
from clip_train.training.module import ClipModule
from clip_train.training.optim import cosine_with_warmup


class GradientNorms(L.Callback):
    """The global gradient norm the optimizer receives (Lightning calls this after unscaling)."""

    def __init__(self) -> None:
        self.norms = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self.norms.append(float(torch.nn.utils.get_total_norm(grads)))


def fp16_fit(init_scale: float, clip: float | None, max_steps: int, batches: int, max_bad_steps: int = 3):
    """Train `small_encoder` on fixed random batches under fp16 autocast with a loss scaler starting at `init_scale`."""
    torch.manual_seed(0)
    module = ClipModule(
        small_encoder(),
        InfoNCE(),
        optimizer=lambda params: torch.optim.AdamW(params, lr=1e-3),
        scheduler=lambda optimizer, total_steps: cosine_with_warmup(optimizer, 1, total_steps),
        gradient_clip_norm=clip,
        max_consecutive_bad_steps=max_bad_steps,
    )
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    norms = GradientNorms()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, plugins=[MixedPrecision("16-mixed", "cpu", scaler)], max_steps=max_steps,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[norms],
    )  # fmt: skip
    data = [
        {key: value.float() if key == "image" else value for key, value in make_batch(seed=i).items()} for i in range(batches)
    ]
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=None))
    return module, scaler, norms.norms, trainer


def test_clipping_acts_on_the_unscaled_gradient():
    # the unclipped gradient norm is about 175 (measured at scales 1..256): a 1e-3 clip always applies
    module, scaler, norms, _ = fp16_fit(init_scale=2.0**8, clip=1e-3, max_steps=3, batches=3)
    assert scaler.get_scale() == 2.0**8  # no step overflowed, so every step is compared
    assert len(norms) == 3
    for norm in norms:
        assert math.isclose(norm, 1e-3, rel_tol=1e-3)  # was 1e-3 / 256: clipped while still scaled


def test_overflowing_steps_back_the_scale_off_and_training_goes_on():
    # at 2^16 the fp16 backward of these batches overflows (measured: 3 halvings to a finite step), so the
    # scaler must halve its way down; 3 overflows in a row used to stop the run as 3 consecutive bad steps
    module, scaler, norms, trainer = fp16_fit(init_scale=2.0**16, clip=1.0, max_steps=3, batches=20, max_bad_steps=3)
    halvings = round(math.log2(2.0**16 / scaler.get_scale()))
    assert 3 <= halvings <= 8
    assert module.bad_steps.skipped == halvings  # each overflow skipped once and backed off once
    assert trainer.global_step == 3  # the run finished its steps instead of stopping after 3 bad ones
    assert len(norms) == 3 and all(math.isfinite(n) and n <= 1.0 + 1e-4 for n in norms)
