"""The VLM's scores through `python -m clip_train.evaluate`'s task contract, against answering and scoring by hand."""

import json
import os
import re
import subprocess
import sys
from collections import defaultdict

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException

import clip_train
from clip_train.evaluate import run as evaluate
from clip_train.paths import CONFIG_DIR
from clip_train.vlm.conversation_source import ConversationSource, read_conversations
from clip_train.vlm.run import run
from clip_train.vlm.vqa import answer, score

KINDS = "data.scenes.kinds=[color,count,grounding]"


@pytest.fixture(scope="module")
def vlm_run(trained_checkpoint, tmp_path_factory):
    """A whole tiny `python -m clip_train.vlm` run (align, instruct, blind) with grounding questions: its folder."""
    folder = tmp_path_factory.mktemp("vlm")
    overrides = [
        f"paths.output_dir={folder}", f"vision.checkpoint={trained_checkpoint}", KINDS, "data.scenes.num_train=24",
        "data.scenes.num_test=12", "data.batch_size=4", "stages.align.steps=2", "stages.instruct.steps=6",
        "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        run(compose("vlm", overrides=overrides))
    return str(folder)


def _evaluate(trained_checkpoint, output, *task_keys) -> dict:
    overrides = [
        f"checkpoint={trained_checkpoint}", f"paths.output_dir={output}", "eval=none", "~eval.tasks.retrieval",
        "+eval/task@eval.tasks.vlm=vlm", "accelerator=cpu", "eval.progress=false", *task_keys,
    ]  # fmt: skip
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return evaluate(compose("evaluate", overrides=overrides))


def _scored_by_hand(checkpoint: str, questions: str, prefix: str) -> dict[str, float]:
    """Each question answered alone (no batch, no padding) and scored by `vqa.score`, averaged per type by hand."""
    vlm = clip_train.load_vlm(checkpoint)
    scores = defaultdict(list)
    for conversation in read_conversations(ConversationSource.of(questions, "questions"))[0]:
        turn = conversation.turns[0]
        preprocess = None if vlm.model.blind else vlm.preprocess
        (predicted,) = answer(vlm.model, vlm.tokenizer, [(conversation.image, turn.question)], preprocess)
        scores[turn.kind].append(score(turn.kind, predicted, turn.answer))
    means = {kind: sum(values) / len(values) for kind, values in scores.items()}
    vqa = {f"{prefix}vqa/{kind}": value for kind, value in means.items() if kind != "grounding"}
    return vqa | {f"{prefix}vqa/mean": sum(vqa.values()) / len(vqa), f"{prefix}grounding/acc@0.5": means["grounding"]}


def _with_predicted_answers(questions: str, checkpoints: list[str], out: str) -> str:
    """The questions file (absolute image paths) with the answer of record i replaced by checkpoint i's own prediction
    for i < len(checkpoints), cycling in steps of twice that, so every model's scores are neither all 0 nor all 1."""
    models = [clip_train.load_vlm(checkpoint) for checkpoint in checkpoints]
    folder = os.path.dirname(questions)
    with open(questions) as f:
        records = json.load(f)
    for index, record in enumerate(records):
        record["image"] = os.path.join(folder, record["image"])
        if index % (2 * len(models)) < len(models):
            vlm = models[index % (2 * len(models))]
            question = record["conversations"][0]["value"].split("\n", 1)[1]
            record["conversations"][1]["value"] = vlm.ask(record["image"], question, max_new_tokens=6)
    with open(out, "w") as f:
        json.dump(records, f)
    return out


@pytest.mark.slow
def test_the_task_reports_a_run_folder_as_its_training_scored_it(vlm_run, trained_checkpoint, tmp_path):
    metrics = _evaluate(trained_checkpoint, tmp_path, f"eval.tasks.vlm.checkpoint={vlm_run}")
    with open(os.path.join(vlm_run, "metrics.json")) as f:  # the run scored its in-memory models
        trained = json.load(f)
    assert {f"vlm/{key}": value for key, value in trained.items() if not key.startswith("time/")} == pytest.approx(metrics)
    assert {"vlm/vqa/color", "vlm/grounding/acc@0.5", "vlm/blind/vqa/mean", "vlm/blind/grounding/acc@0.5"} <= set(metrics)


@pytest.mark.slow
def test_the_scores_are_the_answers_scored_one_by_one(vlm_run, trained_checkpoint, tmp_path):
    instruct = os.path.join(vlm_run, "instruct/checkpoints/last.ckpt")
    blind = os.path.join(vlm_run, "blind/checkpoints/last.ckpt")
    held_out = clip_train.load_vlm(instruct).recipe["test_questions"]
    questions = _with_predicted_answers(held_out, [instruct, blind], str(tmp_path / "questions.json"))
    keys = [f"eval.tasks.vlm.checkpoint={vlm_run}", f"eval.tasks.vlm.questions={questions}", "eval.tasks.vlm.batch_size=5"]
    metrics = _evaluate(trained_checkpoint, tmp_path, *keys)
    expected = _scored_by_hand(instruct, questions, "vlm/") | _scored_by_hand(blind, questions, "vlm/blind/")
    assert metrics == pytest.approx(expected)
    assert 0 < metrics["vlm/vqa/mean"] < 1 and 0 < metrics["vlm/blind/vqa/mean"] < 1
    (tmp_path / "alone").mkdir()
    alone = _evaluate(trained_checkpoint, tmp_path / "alone", f"eval.tasks.vlm.checkpoint={instruct}", *keys[1:])
    assert alone == pytest.approx({key: value for key, value in expected.items() if "/blind/" not in key})


def test_a_folder_that_is_no_vlm_run_is_refused_by_name(tmp_path, trained_checkpoint):
    with pytest.raises(InstantiationException, match="is not a clip_train.vlm run folder"):  # Hydra wraps the ValueError
        _evaluate(trained_checkpoint, tmp_path, f"eval.tasks.vlm.checkpoint={tmp_path}")


@pytest.mark.slow
def test_the_diagnosis_script_gives_the_runs_own_accuracies(vlm_run):
    """scripts/vlm_diagnose.py answers the held-out questions again, per type, for both models of a run folder."""
    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "vlm_diagnose.py")
    printed = subprocess.run([sys.executable, script, vlm_run], capture_output=True, text=True, check=True).stdout
    with open(os.path.join(vlm_run, "metrics.json")) as f:
        trained = json.load(f)
    for kind in ("color", "count"):
        line = next(line for line in printed.splitlines() if line.startswith(f"## {kind}:"))
        image, blind = re.search(r"image ([\d.]+), blind ([\d.]+)", line).groups()
        assert (float(image), float(blind)) == pytest.approx((trained[f"vqa/{kind}"], trained[f"blind/vqa/{kind}"]), abs=5e-4)
