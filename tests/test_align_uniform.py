"""docs/extending.md's worked example of a new objective (alignment + uniformity): the page shows the real files, the
loss against a naive per-pair reference, exact under 2-process gloo DDP, and its config composed and trained
for a few steps with the temperature frozen."""

import json
import math
import os
import re

import pytest
import torch
from gloo import on_gloo_ranks
from helpers import naive_align_uniform
from readme_code import readme_section

from clip_train.model.outputs import TrainingOutputs
from clip_train.objectives.align_uniform import AlignUniform

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_readme_shows_the_real_file_and_config():
    section = readme_section("## A new objective")
    for language, path in (("python", "clip_train/objectives/align_uniform.py"), ("yaml", "configs/loss/align_uniform.yaml")):
        with open(os.path.join(ROOT, path)) as f:
            assert re.findall(rf"```{language}\n(.*?)```", section, flags=re.S) == [f.read()], path


def unit(rows: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(rows, 6, generator=generator, dtype=torch.float64), dim=-1)


def outputs(image, text) -> TrainingOutputs:
    return TrainingOutputs(image, text, scalars={"logit_scale": torch.tensor(math.log(1 / 0.07))})


@pytest.mark.parametrize("options", [{}, {"alignment_power": 1.0, "uniformity_t": 3.0, "uniformity_weight": 0.5}])
def test_loss_and_gradients_equal_naive_reference(options):
    image, text = unit(5, 0).requires_grad_(), unit(5, 1).requires_grad_()
    got = AlignUniform(**options)(outputs(image, text))
    names = {"alignment_power": "alpha", "uniformity_t": "t", "uniformity_weight": "weight"}
    want = naive_align_uniform(image, text, **{names[key]: value for key, value in options.items()})
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], msg=name)
    for mine, theirs in zip(torch.autograd.grad(got["loss"], (image, text)), torch.autograd.grad(want["loss"], (image, text))):
        torch.testing.assert_close(mine, theirs)
    assert float(got["uniformity"].detach()) < 0  # log of a mean of values below 1


def test_one_sample_has_no_uniformity():
    with pytest.raises(ValueError, match="at least two samples"):
        AlignUniform()(outputs(unit(1, 0), unit(1, 1)))


def _rank_loss_and_gradients(rank: int, world: int) -> tuple:
    image, text = unit(8, 0), unit(8, 1)
    rows = slice(rank * 4, (rank + 1) * 4)
    local_image, local_text = image[rows].clone().requires_grad_(), text[rows].clone().requires_grad_()
    loss = AlignUniform()(outputs(local_image, local_text))["loss"]
    loss.backward()
    return loss.detach(), local_image.grad / world, local_text.grad / world  # DDP's average over ranks


@pytest.mark.slow
def test_two_processes_equal_the_full_batch(tmp_path):
    """2 gloo ranks of 4 pairs against one process with all 8: the mean of the ranks' losses (as logged), and
    each rank's share of the gradient (divided by the world size, as DDP's average divides the parameter gradients)."""
    image, text = unit(8, 0).requires_grad_(), unit(8, 1).requires_grad_()
    full = AlignUniform()(outputs(image, text))["loss"]
    full.backward()
    ranks = on_gloo_ranks(_rank_loss_and_gradients, 2, tmp_path)
    torch.testing.assert_close(sum(loss for loss, _, _ in ranks) / 2, full.detach())
    for rank, (_, image_grad, text_grad) in enumerate(ranks):
        torch.testing.assert_close(image_grad, image.grad[rank * 4 : (rank + 1) * 4])
        torch.testing.assert_close(text_grad, text.grad[rank * 4 : (rank + 1) * 4])


def test_config_composes_and_trains_with_a_frozen_temperature(compose_config, colour_shards, tmp_path):
    from hydra.utils import instantiate

    from clip_train.config import check_config
    from clip_train.train import run

    cfg = compose_config(
        "loss=align_uniform", "loss.uniformity_t=3", "model=test", "data=webdataset", "data.num_workers=0",
        f"data.train_shards='{colour_shards}'", "data.batch_size=8", "trainer.max_steps=2", "optim.accumulate=2",
        f"paths.output_dir={tmp_path}/run",
    )  # fmt: skip
    check_config(cfg)
    objective = instantiate(cfg.loss)
    assert isinstance(objective, AlignUniform) and objective.uniformity_t == 3
    image, text = unit(4, 2), unit(4, 3)
    torch.testing.assert_close(objective(outputs(image, text))["loss"], naive_align_uniform(image, text, t=3)["loss"])
    run(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train/samples_seen"] == 16
    assert all(math.isfinite(metrics[name]) for name in ("train/loss", "train/alignment", "train/uniformity"))
    assert metrics["train/logit_scale"] == pytest.approx(1 / 0.07, rel=1e-5)  # not trained: the objective has none
