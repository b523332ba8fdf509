"""A short training run's `val/...` metrics (from the validation tasks, `clip_train.eval.retrieval.ValidationRetrievalTask`)
equal a naive retrieval computation over the same validation embeddings: the run's final weights (last.ckpt) embed
the run's own validation loader, and every image is ranked against every caption by a full similarity matrix."""

import json
import os
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

import clip_train
from clip_train.build import build_datamodule


def _naive_retrieval(image_features: torch.Tensor, text_features: torch.Tensor, scale: float) -> dict[str, float]:
    """Pairs i <-> i, no ties (random-init features): a query's rank is 1 + the keys scoring strictly above its pair."""
    similarity = image_features.double() @ text_features.double().T  # (N, N)
    pair = torch.arange(len(similarity))
    metrics = {}
    for direction, scores in (("image_to_text", similarity), ("text_to_image", similarity.T)):
        ranks = 1 + (scores > scores.diagonal()[:, None]).sum(1).double()
        for k in (1, 5, 10):
            metrics[f"val/{direction}_R@{k}"] = float((ranks <= k).double().mean())
        metrics[f"val/{direction}_mean_rank"] = float(ranks.mean())
        metrics[f"val/{direction}_median_rank"] = float(
            ranks.sort().values[(len(ranks) - 1) // 2 : len(ranks) // 2 + 1].mean().floor()
        )
    logits = scale * similarity
    metrics["val/loss"] = float(
        (torch.nn.functional.cross_entropy(logits, pair) + torch.nn.functional.cross_entropy(logits.T, pair)) / 2
    )
    off_diagonal = ~torch.eye(len(similarity), dtype=torch.bool)
    metrics["val/alignment_gap"] = float(similarity.diagonal().mean() - similarity[off_diagonal].mean())
    return metrics


@pytest.mark.slow
def test_a_short_run_reports_the_naive_retrieval_of_its_validation_embeddings(tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "clip_train", "debug=fast", "eval=none", "logger=[]", f"hydra.run.dir={run_dir}"]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    logged = json.loads((run_dir / "metrics.json").read_text())

    model = clip_train.load(str(run_dir / "checkpoints" / "last.ckpt")).network
    datamodule = build_datamodule(OmegaConf.load(run_dir / ".hydra" / "config.yaml"))
    datamodule.setup("validate")
    with torch.no_grad():
        embedded = [model(datamodule.on_after_batch_transfer(batch, 0)) for batch in datamodule.val_dataloader()]
    image_features, text_features = (torch.cat(parts) for parts in zip(*embedded))
    assert len(image_features) == 64  # debug=fast's whole validation split
    expected = _naive_retrieval(image_features, text_features, float(model.logit_scale.detach().exp()))
    assert {key: logged[key] for key in expected} == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert 0 < expected["val/image_to_text_R@1"] < 1  # neither collapsed nor trivially perfect: ranks are exercised
