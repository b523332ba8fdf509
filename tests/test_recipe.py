"""The recipe round-trips, and checkpoints and exports written before it had a version still load."""

import json

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from safetensors.torch import save_file

import clip_train
from clip_train.data.tokenizer import tokenizer_files, train_caption_tokenizer
from clip_train.recipe import VERSION, Recipe

MEAN, STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
TEXTS = ["a red square", "two blue circles"]


@pytest.fixture
def old_model(compose_config):
    """(the test preset's model, its tokenizer, the recipe dict as train.py wrote it before issue 15)."""
    tokenizer = train_caption_tokenizer(TEXTS * 4, vocab_size=300)
    cfg = compose_config("model=test", f"model.text_tower.vocab_size={len(tokenizer)}")
    model_config = OmegaConf.to_container(cfg.model, resolve=True)
    torch.manual_seed(0)
    model = instantiate(model_config).eval()
    version_1 = {
        "model": model_config,
        "tokenizer": "some/tokenizer",
        "tokenizer_files": tokenizer_files(tokenizer),
        "image_mean": MEAN,
        "image_std": STD,
    }
    return model, tokenizer, version_1


def test_round_trip_writes_the_current_version():
    recipe = Recipe(model={"embed_dim": 8}, image_mean=tuple(MEAN), image_std=tuple(STD), tokenizer_source="t")
    written = recipe.to_dict()
    assert written["version"] == VERSION == 2
    assert json.loads(json.dumps(written)) == written  # plain data: JSON and weights_only checkpoints hold it
    assert Recipe.from_dict(written) == recipe


def test_unknown_versions_and_non_recipes_are_refused():
    with pytest.raises(ValueError, match="recipe version 3: this clip_train reads versions 1 to 2"):
        Recipe.from_dict({"version": 3, "model": {}, "image_mean": MEAN, "image_std": STD})
    with pytest.raises(ValueError, match="not a clip_train recipe: it lacks image_mean, image_std"):
        Recipe.from_dict({"model": {}})


def test_a_checkpoint_written_before_the_version_loads_as_version_1(old_model, tmp_path):
    model, tokenizer, version_1 = old_model
    state = {f"model.{name}": tensor for name, tensor in model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"recipe": version_1, "accumulate": 1}}, tmp_path / "old.ckpt")
    loaded = clip_train.load(str(tmp_path / "old.ckpt"))
    assert loaded.recipe.version == 1 and loaded.recipe.tokenizer_source == "some/tokenizer"
    assert loaded.recipe.image_mean == tuple(MEAN)
    ids = tokenizer(TEXTS, padding="max_length", max_length=model.context_length, return_tensors="pt")
    with torch.no_grad():
        expected = model.encode_text(ids["input_ids"], ids["attention_mask"])
    torch.testing.assert_close(loaded.encode_text(TEXTS), expected)


@pytest.mark.parametrize("file_name", ["clip_train_config.json", "config.json"])
def test_an_export_written_before_the_version_loads_as_version_1(old_model, tmp_path, file_name):
    model, tokenizer, version_1 = old_model
    save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()}, tmp_path / "model.safetensors")
    exported = {key: value for key, value in version_1.items() if key not in ("tokenizer", "tokenizer_files")}
    (tmp_path / file_name).write_text(json.dumps(exported))
    tokenizer.save_pretrained(tmp_path)
    loaded = clip_train.load(str(tmp_path))
    assert loaded.recipe.version == 1 and loaded.recipe.model == version_1["model"]
    pixels = torch.randn(2, 3, model.image_size, model.image_size)
    torch.testing.assert_close(loaded.encode_pixels(pixels), model.encode_image(pixels))


def test_a_version_1_coca_checkpoint_loads_without_its_loss_weights(compose_config, tmp_path):
    """Before issue 15 CoCa's model config held the loss weights, which the objective holds now."""
    tokenizer = train_caption_tokenizer(TEXTS * 4, vocab_size=300)
    cfg = compose_config("model=coca_test", "loss=coca", f"model.text_tower.vocab_size={len(tokenizer)}")
    model_config = OmegaConf.to_container(cfg.model, resolve=True)
    torch.manual_seed(0)
    model = instantiate(model_config).eval()
    old_config = {**model_config, "caption_loss_weight": 2.0, "contrastive_loss_weight": 1.0}
    version_1 = {"model": old_config, "tokenizer_files": tokenizer_files(tokenizer), "image_mean": MEAN, "image_std": STD}
    state = {f"model.{name}": tensor for name, tensor in model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"recipe": version_1}}, tmp_path / "coca.ckpt")
    loaded = clip_train.load(str(tmp_path / "coca.ckpt"))
    assert loaded.recipe.model == model_config
    pixels = torch.randn(2, 3, model.image_size, model.image_size)
    torch.testing.assert_close(loaded.encode_pixels(pixels), model.encode_image(pixels))
