"""`python -m clip_train.vlm` end to end: on a tiny tower, both stages, the blind baseline and metrics.json, with
colour answered far above the blind baseline; after the default CLIP run, the default command counting above what
the question alone allows."""

import csv
import json
import os

import pytest
from hydra import compose, initialize_config_dir
from tiny_vlm import read_test_set

from clip_train import load_vlm
from clip_train.paths import CONFIG_DIR
from clip_train.train import run as train_clip
from clip_train.vlm.blind_ceiling import blind_ceiling
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


@pytest.mark.slow
def test_the_readme_commands_count_and_name_colours_above_what_the_question_alone_allows(tmp_path):
    """The README's two commands as they are (the default CLIP run, then the default VLM command on its checkpoint),
    but without the blind baseline: the reference is the blind ceiling, computed from the questions, which the blind
    baseline reaches on count (0.553 on seeds 0-2) and does not reach on colour (0.13 against 0.16)."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        train_clip(compose("train", overrides=[f"paths.output_dir={tmp_path}/clip"]))
        overrides = [f"vision.checkpoint={tmp_path}/clip/checkpoints/last.ckpt", f"paths.output_dir={tmp_path}/vlm",
                     "blind_baseline=false", "trainer.enable_progress_bar=false"]  # fmt: skip
        metrics = run(compose("vlm", overrides=overrides))
    test_file = load_vlm(f"{tmp_path}/vlm/instruct/checkpoints/last.ckpt").recipe["test_questions"]
    turns = {name: [c.turns[0] for c in read_test_set(os.path.join(os.path.dirname(test_file), f"{name}.json"))]
             for name in ("train", "test")}  # fmt: skip
    ceiling = blind_ceiling(turns["train"], turns["test"])
    print("vqa:", {k: round(v, 3) for k, v in metrics.items() if k.startswith("vqa/")}, "ceiling:", ceiling)
    # measured (seeds 0, 1, 2 of the VLM on one CLIP run): count 0.690, 0.647, 0.620 against a ceiling of 0.553;
    # colour 0.755, 0.744, 0.725 against 0.161. In the clean-clone CI (its own CLIP run, 2 threads): count 0.620,
    # colour 0.769, yes/no 0.580, in 397 s. Yes/no is not bounded: seeds 0 and 1 learn it (0.737, 0.713 against
    # 0.523), seed 2 does not within the default's 3000 instruct steps (0.480)
    assert metrics["vqa/count"] >= ceiling["count"] + 0.05, (metrics, ceiling)
    assert metrics["vqa/color"] >= ceiling["color"] + 0.4, (metrics, ceiling)
