"""An image tower outside timm works wherever the `Tower` contract reaches: the dual encoder, CoCa,
locking, and the clip_train export; the formats that need timm's trunk refuse it by name."""

import os

import pytest
import torch
from helpers import PatchMeanImageTower, check_tower

import clip_train
from clip_train.data.tokenizer import train_caption_tokenizer
from clip_train.export import export
from clip_train.inference import ClipModel
from clip_train.interop.hf_write import write_hf
from clip_train.interop.open_clip_write import write_open_clip
from clip_train.model import CausalTextTower, CoCa
from clip_train.recipe import Recipe

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
TEXT_TOWER = {"_target_": "clip_train.model.CausalTextTower", "embed_dim": 16, "width": 32, "layers": 1, "heads": 2,
              "context_length": 12}  # fmt: skip


def test_it_meets_the_contract():
    check_tower(PatchMeanImageTower(16), (torch.randn(2, 3, 32, 32),), 16)


def test_coca_trains_and_captions_with_it():
    torch.manual_seed(0)
    text = CausalTextTower(16, vocab_size=50, width=32, layers=1, heads=2, context_length=12)
    coca = CoCa(PatchMeanImageTower(16), text, 16, 32, 12, decoder_layers=1, decoder_heads=2)
    ids = torch.randint(3, 50, (2, 12))
    batch = {"image": torch.randn(2, 3, 32, 32), "input_ids": ids, "attention_mask": torch.ones_like(ids)}
    outputs = coca.training_forward(batch)
    assert outputs.image_features.shape == outputs.text_features.shape == (2, 16) and outputs.caption_nll.shape == (2,)
    outputs.caption_nll.mean().backward()
    assert coca.image_tower.patches.weight.grad is not None  # the decoder's memory reaches the tower
    captions = coca.eval().generate(batch["image"], bos_id=1, eos_id=2, max_length=5)
    assert len(captions) == 2 and all(len(caption) <= 4 for caption in captions)  # at most 5 with start and end


@pytest.fixture
def model() -> ClipModel:
    tokenizer = train_caption_tokenizer(["a red square", "a blue circle"] * 4, vocab_size=300)
    config = {
        "_target_": "clip_train.model.DualEncoder", "embed_dim": 16, "image_size": 32, "context_length": 12,
        "image_tower": {"_target_": "helpers.PatchMeanImageTower", "embed_dim": 16},
        "text_tower": {**TEXT_TOWER, "vocab_size": len(tokenizer)},
    }  # fmt: skip
    from hydra.utils import instantiate

    torch.manual_seed(0)
    return ClipModel(instantiate(config), tokenizer, Recipe(model=config, image_mean=MEAN, image_std=STD))


def test_the_clip_train_export_round_trips_without_a_timm_folder(model, tmp_path):
    export(model, str(tmp_path / "export"))
    assert not os.path.exists(tmp_path / "export" / "image_tower")
    loaded = clip_train.load(str(tmp_path / "export"))
    pixels = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.encode_pixels(pixels), model.encode_pixels(pixels))


@pytest.mark.parametrize(("write", "name"), [(write_hf, "format=hf"), (write_open_clip, "OpenCLIP")])
def test_timm_formats_refuse_it_by_name(model, tmp_path, write, name):
    with pytest.raises(ValueError, match=f"{name} holds the image tower as a timm model, and PatchMeanImageTower is not"):
        write(model, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")
