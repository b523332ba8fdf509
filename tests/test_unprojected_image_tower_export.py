"""An image tower without projection (`model.image_tower.projection=none`, SigLIP's) beside a causal text tower:
transformers' and OpenCLIP's models always project, so the exports give them the identity it amounts to, and both
embed as clip_train does."""

import pytest
import torch
import torch.nn.functional as F
from helpers import caption_tokenizer, colour_samples, perturb_
from hydra.utils import instantiate
from transformers import AutoModel, VisionTextDualEncoderModel

from clip_train.data.transforms import CLIP_MEAN, CLIP_STD
from clip_train.inference import ClipModel
from clip_train.interop.hf_write import write_hf
from clip_train.recipe import Recipe

TEXTS = ["a red square", "a blue square"]
WIDTH = 64  # test_vit's: without a projection the shared space is the trunk's width


def unprojected_model(pool: str) -> ClipModel:
    """timm's test_vit at its own 160 px, pooled by `pool` and unprojected, with a small causal text tower."""
    tokenizer = caption_tokenizer()
    config = {
        "_target_": "clip_train.model.DualEncoder", "embed_dim": WIDTH, "image_size": 160, "context_length": 12,
        "image_tower": {"_target_": "clip_train.model.ImageTower", "model_name": "test_vit", "embed_dim": WIDTH,
                        "image_size": 160, "pool": pool, "projection": "none"},
        "text_tower": {"_target_": "clip_train.model.CausalTextTower", "embed_dim": WIDTH, "vocab_size": len(tokenizer),
                       "width": 32, "layers": 2, "heads": 2, "context_length": 12, "eos_token_id": tokenizer.eos_token_id},
    }  # fmt: skip
    model = instantiate(config)
    perturb_(model, seed=5)
    return ClipModel(model, tokenizer, Recipe(model=config, image_mean=CLIP_MEAN, image_std=CLIP_STD))


def test_hf_export_of_an_unprojected_image_tower_embeds_as_ours(tmp_path):
    ours = unprojected_model("map")  # attention-pooled, as SigLIP's
    write_hf(ours, str(tmp_path / "hf"))
    theirs = AutoModel.from_pretrained(tmp_path / "hf").eval()
    assert isinstance(theirs, VisionTextDualEncoderModel)
    torch.testing.assert_close(theirs.visual_projection.weight, torch.eye(WIDTH), rtol=0, atol=0)
    images = [sample.image for sample in colour_samples(3)]
    pixels = torch.stack([ours.preprocess(image) for image in images])
    with torch.no_grad():
        features = theirs.get_image_features(pixel_values=pixels)
        features = features if isinstance(features, torch.Tensor) else features.pooler_output
    torch.testing.assert_close(F.normalize(features, dim=-1), ours.encode_image(images), rtol=0, atol=1e-5)


def test_open_clip_export_of_an_unprojected_image_tower_embeds_as_ours(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    from clip_train.interop.open_clip_write import write_open_clip

    ours = unprojected_model("token")  # OpenCLIP's timm tower cannot add attention pooling to a trunk (timm refuses)
    write_open_clip(ours, str(tmp_path / "open_clip"))
    theirs, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / 'open_clip'}", pretrained="none")
    images = [sample.image for sample in colour_samples(3)]
    ids = open_clip.get_tokenizer(f"local-dir:{tmp_path / 'open_clip'}")(TEXTS)
    with torch.no_grad():
        image_features = theirs.eval().encode_image(torch.stack([preprocess(image) for image in images]), normalize=True)
        text_features = theirs.encode_text(ids, normalize=True)
    torch.testing.assert_close(image_features, ours.encode_image(images), rtol=0, atol=1e-5)
    torch.testing.assert_close(text_features, ours.encode_text(TEXTS), rtol=0, atol=1e-5)
