"""`python -m clip_train.vlm` end to end on a tiny tower: both stages, the blind baseline, metrics.json; and the
image-conditioned model answers colour questions far above the same LM trained without the image."""

import csv
import json
import os

import pytest
from hydra import compose, initialize_config_dir

from clip_train.paths import CONFIG_DIR
from clip_train.vlm.run import run

TINY = [
    "data.scenes.num_train=300", "data.scenes.num_test=30", "data.scenes.kinds=[color]", "data.batch_size=16",
    "stages.align.steps=5", "stages.instruct.steps=250", "stages.instruct.lr=3e-3", "lm_config.hidden_size=64",
    "lm_config.intermediate_size=128", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
]  # fmt: skip


@pytest.mark.slow
def test_the_default_command_beats_the_blind_baseline_on_colour(trained_checkpoint, tmp_path):
    overrides = [f"vision.checkpoint={trained_checkpoint}", f"paths.output_dir={tmp_path}", *TINY]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        metrics = run(compose("vlm", overrides=overrides))
    with open(tmp_path / "metrics.json") as f:
        assert json.load(f) == metrics
    for prefix in ("", "blind/"):
        assert {f"{prefix}vqa/color", f"{prefix}vqa/mean"} <= set(metrics)
    assert all(os.path.isfile(tmp_path / stage / "checkpoints" / "last.ckpt") for stage in ("align", "instruct", "blind"))
    # measured with the seam loader: vqa/color 0.36 against blind/vqa/color 0.07 (8 colours: blind, the LM can only
    # guess). This tiny run swings with the data order: seeds 1 and 2 gave colour 0.43 and 0.29 (0.32 and 0.25 with
    # the loader before, whose seed 0 gave 0.71), so the margin asked is 0.2
    assert metrics["vqa/color"] >= metrics["blind/vqa/color"] + 0.2, metrics


@pytest.mark.slow
def test_the_default_align_stage_teaches_the_language_model_to_caption(trained_checkpoint, tmp_path):
    """The LM starts from random weights, so the align stage trains it with the connector (`stages.align.lm=full`):
    frozen, as LLaVA keeps its pre-trained LM, it cannot learn to caption (the old default's loss stayed at ~6.6)."""
    overrides = [f"vision.checkpoint={trained_checkpoint}", f"paths.output_dir={tmp_path}", "stage=align", *TINY[:2],
                 "data.batch_size=16", "stages.align.steps=60", *TINY[-4:]]  # fmt: skip
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        run(compose("vlm", overrides=overrides))
    with open(tmp_path / "align" / "csv" / "metrics.csv") as f:
        losses = [float(row["train/loss"]) for row in csv.DictReader(f) if row.get("train/loss")]
    # measured: 6.45 at step 10, 4.07 at step 60 (2.4 nats down); with stages.align.lm=frozen 6.98 to 6.92
    assert len(losses) == 6 and losses[-1] < losses[0] - 1.5, losses
