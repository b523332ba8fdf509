"""`python -m clip_train.vlm`: its dry run, refused keys and settings, and every shipped config group option built."""

import json
import os
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image
from tiny_vlm import WORDS
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

import clip_train
from clip_train.paths import CONFIG_DIR
from clip_train.vlm.language_model import build_language_model
from clip_train.vlm.run import build_vlm, conversation_files, run
from clip_train.vlm.text import prompt_ids
from clip_train.vlm.tower import TowerSource

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _vlm(tmp_path, *arguments: str, compose_only: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO)
    if compose_only:
        env["CLIP_TRAIN_COMPOSE_ONLY"] = str(tmp_path / "composed.jsonl")
    return subprocess.run([sys.executable, "-m", "clip_train.vlm", *arguments], env=env, capture_output=True, text=True)


def test_the_dry_run_composes_the_command_as_typed(tmp_path):
    done = _vlm(tmp_path, "stage=align", "vision.checkpoint=runs/last.ckpt", "lm=/models/tiny", "trainer.devices=2")
    assert done.returncode == 0, done.stderr
    (composed,) = [json.loads(line) for line in (tmp_path / "composed.jsonl").read_text().splitlines()]
    assert (composed["stage"], composed["lm"], composed["vision"]["checkpoint"]) == ("align", "/models/tiny", "runs/last.ckpt")
    assert composed["trainer"]["devices"] == 2 and composed["connector"]["_target_"].endswith("MlpConnector")


@pytest.mark.parametrize(
    "arguments, connector, lm_config",
    [
        (("connector=qformer", "connector.num_queries=8"), "qformer.QFormerConnector", "LlamaConfig"),
        (("lm_config=gpt2_tiny",), "connector.MlpConnector", "GPT2Config"),
        (("vlm/connector@connector=qformer",), "qformer.QFormerConnector", "LlamaConfig"),
    ],
)
def test_a_group_is_chosen_by_its_short_name(tmp_path, arguments, connector, lm_config):
    """`connector=qformer` chooses the group option (Hydra alone would set the node to the string "qformer")."""
    done = _vlm(tmp_path, *arguments)
    assert done.returncode == 0, done.stderr
    (composed,) = [json.loads(line) for line in (tmp_path / "composed.jsonl").read_text().splitlines()]
    assert composed["connector"]["_target_"] == f"clip_train.vlm.{connector}"
    assert composed["lm_config"]["_target_"] == f"transformers.{lm_config}"
    if "connector.num_queries=8" in arguments:
        assert composed["connector"]["num_queries"] == 8


def test_a_connector_that_does_not_exist_is_refused_with_the_options(tmp_path):
    done = _vlm(tmp_path, "connector=qformr")
    assert done.returncode != 0 and "vlm/connector/qformr" in done.stderr and "qformer" in done.stderr


def test_a_misspelt_key_is_named_before_anything_runs(tmp_path):
    done = _vlm(tmp_path, "vision.chekpoint=x", compose_only=False)
    assert done.returncode != 0 and "vision.chekpoint" in done.stderr and "checkpoint" in done.stderr


def _config(tmp_path, *overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("vlm", overrides=[f"paths.output_dir={tmp_path}", *overrides])


@pytest.mark.parametrize(
    "overrides, message",
    [
        ((), "vision.checkpoint is required"),
        (("vision.checkpoint=x.ckpt", "stage=pretrain"), "stage=pretrain"),
    ],
)
def test_bad_settings_are_refused_by_name(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        run(_config(tmp_path, *overrides))


def test_the_users_files_come_all_three_or_none(tmp_path):
    with pytest.raises(ValueError, match=r"missing \['data.test'\]"):
        conversation_files(_config(tmp_path, "data.captions=c.json", "data.train=t.json"), 32)


@pytest.mark.parametrize("option", sorted(os.listdir(os.path.join(CONFIG_DIR, "vlm", "lm_config"))))
def test_every_lm_config_builds_a_causal_lm_over_the_word_tokenizer(tmp_path, option):
    cfg = _config(tmp_path, f"vlm/lm_config@lm_config={option.removesuffix('.yaml')}")
    model, tokenizer = build_language_model(None, cfg.lm_config, WORDS)
    ids = torch.tensor([tokenizer("what color is the square? red")["input_ids"]])
    assert model(input_ids=ids).logits.shape == (1, ids.shape[1], len(tokenizer))
    assert tokenizer.convert_tokens_to_ids(["<image>", "<loc_999>"]) != [tokenizer.unk_token_id] * 2
    connector = instantiate(cfg.connector, image_width=24, lm_width=model.get_input_embeddings().embedding_dim)
    assert connector(torch.zeros(2, 5, 24)).shape == (2, 5, model.get_input_embeddings().embedding_dim)


def test_a_local_lm_folder_gets_the_image_and_location_tokens(tmp_path):
    words = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "red": 4, "square": 5}
    backend = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    LlamaForCausalLM(LlamaConfig(vocab_size=6, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(tmp_path / "lm")  # fmt: skip
    tokenizer.save_pretrained(tmp_path / "lm")
    model, loaded = build_language_model(str(tmp_path / "lm"), None, [])
    assert len(loaded) == 6 + 1 + 1000 and model.get_input_embeddings().num_embeddings == len(loaded)
    assert loaded("<s> red <image> <loc_7>")["input_ids"][:4] == [1, 4, *loaded.convert_tokens_to_ids(["<image>", "<loc_7>"])]
    with pytest.raises(ValueError, match="not a local transformers causal LM"):
        build_language_model(str(tmp_path), None, [])


@pytest.mark.slow
def test_instruct_starts_from_the_align_stage_it_is_given(trained_checkpoint, tmp_path):
    tiny = [
        f"vision.checkpoint={trained_checkpoint}", "data.scenes.num_train=20", "data.scenes.num_test=4", "data.batch_size=4",
        "stages.align.steps=2", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
    ]  # fmt: skip
    run(_config(tmp_path / "align", "stage=align", *tiny))
    saved = torch.load(tmp_path / "align/align/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    cfg = _config(tmp_path / "instruct", f"init_from={tmp_path}/align/align/checkpoints/last.ckpt", *tiny)
    source = TowerSource.from_clip(trained_checkpoint)
    started, tokenizer = build_vlm(cfg, source, [], blind=False)  # no texts: the vocabulary comes from the checkpoint
    for name, value in started.state_dict().items():
        if not name.startswith("vision."):
            torch.testing.assert_close(value, saved[f"model.{name}"], msg=name)
    fresh, _ = build_vlm(_config(tmp_path / "fresh", *tiny), source, ["what color"], blind=False)
    assert not torch.equal(fresh.connector.layers[0].weight[:1], started.connector.layers[0].weight[:1])
    assert tokenizer.convert_tokens_to_ids("triangle") != tokenizer.unk_token_id


@pytest.mark.slow
def test_load_vlm_rebuilds_the_trained_model_and_answers(trained_checkpoint, tmp_path):
    tiny = [
        f"vision.checkpoint={trained_checkpoint}", "data.scenes.num_train=20", "data.scenes.num_test=4", "data.batch_size=4",
        "stages.instruct.steps=3", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
    ]  # fmt: skip
    run(_config(tmp_path / "run", "stage=instruct", *tiny))
    saved = str(tmp_path / "run/instruct/checkpoints/last.ckpt")
    vlm = clip_train.load_vlm(saved)
    reference, tokenizer = build_vlm(
        _config(tmp_path / "other", f"init_from={saved}", *tiny), TowerSource.from_clip(trained_checkpoint), [], False
    )
    ids = torch.tensor([prompt_ids(tokenizer, "what color is the circle?", with_image=True)])
    image = Image.new("RGB", (32, 32), (220, 40, 40))
    pixels = vlm.preprocess(image)[None]
    reference.eval()
    with torch.no_grad():
        expected = reference.language_model(inputs_embeds=reference.splice(ids, torch.ones_like(ids), pixels)[0]).logits
        got = vlm.model.language_model(inputs_embeds=vlm.model.splice(ids, torch.ones_like(ids), pixels)[0]).logits
    torch.testing.assert_close(got, expected)
    image.save(tmp_path / "red.png")
    assert vlm.ask(image, "what color is the circle?") == vlm.ask(str(tmp_path / "red.png"), "what color is the circle?")
    assert isinstance(vlm.describe(image), str)
    box = vlm.ground(image, "red circle")
    assert box is None or len(box) == 4
    with pytest.raises(ValueError, match="not a clip_train.vlm stage checkpoint"):
        clip_train.load_vlm(trained_checkpoint)
