"""SigLIP weights both ways: a transformers SiglipModel folder -> model.init_from -> equal embeddings and sigmoid
probabilities, its preprocessing with it; a SigLIP-layout run -> export format=hf -> a SiglipModel and zero-shot
pipeline that agree with it. The source's preprocessing comes along for a CLIP too, unless the user sets it."""

import json
import os

import huggingface_hub.constants
import pytest
import torch
import torch.nn.functional as F
from helpers import COLORS, colour_samples
from hf_clip_models import save_small_clip
from hf_siglip_models import save_small_siglip
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image
from transformers import AutoImageProcessor, AutoTokenizer, CLIPImageProcessor, SiglipModel, pipeline

import clip_train
from clip_train.data.shard_writer import write_shards
from clip_train.data.tokenizer import Tokenize
from clip_train.export import main as export_main
from clip_train.interop import init_from
from clip_train.interop.warm_start import load_pretrained_weights, start_from_pretrained
from clip_train.paths import CONFIG_DIR
from clip_train.train import run

CAPTIONS = ["a red square", "a blue square", "red", "a square that is blue and red"]
HALF = [0.5, 0.5, 0.5]


def _features(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _sigmoid_probabilities(model, image_features, text_features) -> torch.Tensor:
    """(images, texts) sigmoid(t · cos + b) from our model's features, scale and bias."""
    return torch.sigmoid(model.logit_scale.exp() * image_features @ text_features.T + model.logit_bias)


def test_siglip_model_reads_into_equal_embeddings_and_sigmoid_probabilities(tmp_path):
    reference = save_small_siglip(str(tmp_path / "siglip"))
    with torch.no_grad():  # where a trained SigLIP sits, so the probabilities spread over (0, 1)
        reference.logit_scale.fill_(2.3)
        reference.logit_bias.fill_(-1.5)
    reference.save_pretrained(tmp_path / "siglip")
    pretrained = init_from(str(tmp_path / "siglip"))
    assert pretrained.preprocessing == {"image_mean": HALF, "image_std": HALF, "image_resize": "squash"}
    model = instantiate(pretrained.model_config).eval()
    load_pretrained_weights(model, pretrained)
    tokens = Tokenize(AutoTokenizer.from_pretrained(pretrained.tokenizer), model.context_length)(CAPTIONS)
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ours_image, ours_text = model.encode_image(pixels), model.encode_text(tokens["input_ids"], tokens["attention_mask"])
        reference_image = F.normalize(_features(reference.get_image_features(pixel_values=pixels)), dim=-1)
        reference_text = F.normalize(_features(reference.get_text_features(input_ids=tokens["input_ids"])), dim=-1)
        reference_probs = reference(pixel_values=pixels, input_ids=tokens["input_ids"]).logits_per_image.sigmoid()
        ours_probs = _sigmoid_probabilities(model, ours_image, ours_text)
    assert reference_image.shape == (3, 32) and reference_text.shape == (4, 32)
    assert model.logit_bias.item() == pytest.approx(-1.5) and model.logit_scale.item() == pytest.approx(2.3)
    differences = {
        "image": (ours_image - reference_image).abs().max().item(),
        "text": (ours_text - reference_text).abs().max().item(),
        "probabilities": (ours_probs - reference_probs).abs().max().item(),
    }
    low, high = reference_probs.aminmax()
    print(f"read_hf_siglip: max abs differences {differences}; probabilities from {low:.2f} to {high:.2f}")
    torch.testing.assert_close(ours_image, reference_image, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours_text, reference_text, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours_probs, reference_probs, rtol=0, atol=1e-5)


def test_a_siglip_hub_id_in_the_local_cache_reads_as_its_folder(tmp_path, monkeypatch):
    """google/siglip-* as the hub cache lays it out (models--ORG--NAME/snapshots/<commit>/, refs/main)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--google--siglip-tiny-test"
    os.makedirs(repo / "refs")
    (repo / "refs" / "main").write_text("0" * 40)
    save_small_siglip(str(repo / "snapshots" / ("0" * 40)))
    from_cache, from_folder = init_from("google/siglip-tiny-test"), init_from(str(repo / "snapshots" / ("0" * 40)))
    assert from_cache.model_config == from_folder.model_config and from_cache.preprocessing["image_resize"] == "squash"
    assert all(torch.equal(from_cache.state_dict[name], value) for name, value in from_folder.state_dict.items())


def test_a_siglip_source_without_its_bias_names_the_loss(tmp_path):
    save_small_siglip(str(tmp_path / "siglip"))
    pretrained = init_from(str(tmp_path / "siglip"))
    model = instantiate(pretrained.model_config | {"init_logit_bias": None})  # as model.init_logit_bias=null makes it
    with pytest.raises(ValueError, match="has a logit_bias .* train it with loss=siglip"):
        load_pretrained_weights(model, pretrained)


def test_the_sources_preprocessing_comes_along_unless_set(tmp_path, compose_config):
    """A CLIP whose processor normalises otherwise than OpenAI's (before: data.image_mean stayed OpenAI's), and a
    SigLIP (mean and std 0.5, no crop); a key the user sets wins, the others still come from the source."""
    save_small_clip(str(tmp_path / "clip"))
    CLIPImageProcessor(image_mean=[0.1, 0.2, 0.3], image_std=[0.4, 0.5, 0.6]).save_pretrained(tmp_path / "clip")
    save_small_siglip(str(tmp_path / "siglip"))
    expected = {
        "clip": ([0.1, 0.2, 0.3], [0.4, 0.5, 0.6], "shortest"),
        "siglip": (HALF, HALF, "squash"),
    }
    for source, preprocessing in expected.items():
        cfg = compose_config("model=clip_pretrained", f"model.init_from={tmp_path}/{source}")
        cfg, _ = start_from_pretrained(cfg)
        assert (list(cfg.data.image_mean), list(cfg.data.image_std), cfg.data.image_resize) == preprocessing
    cfg = compose_config(
        "model=clip_pretrained", f"model.init_from={tmp_path}/siglip", "data.image_mean=[0.4,0.4,0.4]",
        "data.image_resize=shortest",
    )  # fmt: skip
    cfg, _ = start_from_pretrained(cfg)
    assert (list(cfg.data.image_mean), list(cfg.data.image_std), cfg.data.image_resize) == ([0.4] * 3, HALF, "shortest")


@pytest.fixture(scope="module")
def fine_tuned_siglip(tmp_path_factory):
    """3 steps of loss=siglip on colour squares from a small transformers SiglipModel; (its folder, the checkpoint)."""
    folder = tmp_path_factory.mktemp("fine_tuned_siglip")
    save_small_siglip(str(folder / "source"))
    write_shards(str(folder / "shards"), "train", colour_samples(40), samples_per_shard=10)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        run(compose("train", overrides=[
            f"paths.output_dir={folder}/run", "data=webdataset", "model=clip_pretrained",
            f"model.init_from={folder}/source", "loss=siglip",
            f"data.train_shards='{folder}/shards/train-{{00000..00003}}.tar'", "data.batch_size=8",
            "data.num_workers=0", "trainer.max_steps=3", "logger=[]", "trainer.limit_val_batches=0",
            "optim.optimizer.lr=1e-3",
        ]))  # fmt: skip
    return str(folder / "source"), str(folder / "run" / "checkpoints" / "last.ckpt")


@pytest.mark.slow
def test_a_siglip_fine_tune_keeps_its_preprocessing(fine_tuned_siglip):
    """The run's recipe holds the source's preprocessing: ClipModel preprocesses a non-square image as transformers'
    SiglipImageProcessor (PIL backend) of the source does, squashed, not cropped."""
    source, checkpoint = fine_tuned_siglip
    tuned = clip_train.load(checkpoint)
    assert (list(tuned.recipe.image_mean), list(tuned.recipe.image_std), tuned.recipe.image_resize) == (HALF, HALF, "squash")
    generator = torch.Generator().manual_seed(0)
    image = Image.fromarray(torch.randint(0, 256, (40, 64, 3), dtype=torch.uint8, generator=generator).numpy())
    theirs = AutoImageProcessor.from_pretrained(source, backend="pil")([image], return_tensors="pt")["pixel_values"]
    ours = tuned.preprocess(image).unsqueeze(0)
    print(f"SigLIP preprocessing: max abs difference {(torch.as_tensor(theirs) - ours).abs().max().item():.2e}")
    torch.testing.assert_close(torch.as_tensor(theirs), ours, rtol=0, atol=1e-5)
    assert tuned.logit_bias is not None
    assert not torch.equal(tuned.logit_bias, init_from(source).state_dict["logit_bias"])  # it trained


@pytest.mark.slow
def test_a_siglip_run_exports_as_a_siglip_model_the_pipeline_agrees_with(fine_tuned_siglip, tmp_path):
    _, checkpoint = fine_tuned_siglip
    out = str(tmp_path / "hf")
    export_main([f"checkpoint={checkpoint}", f"out={out}", "format=hf"])
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["model_type"] == "siglip"
    ours = clip_train.load(checkpoint)
    theirs = SiglipModel.from_pretrained(out).eval()
    images = [sample.image for sample in colour_samples(6)]
    texts = [f"a {name} square" for name in COLORS]
    tokens = AutoTokenizer.from_pretrained(out)(texts, padding="max_length", truncation=True, return_tensors="pt")
    assert set(tokens) == {"input_ids"}  # the text model reads no mask, so the tokenizer gives none
    assert tokens["input_ids"].tolist() == ours.tokenize(texts)["input_ids"].tolist()
    processor = AutoImageProcessor.from_pretrained(out, backend="pil")
    pixels = torch.as_tensor(processor(images, return_tensors="pt")["pixel_values"])
    torch.testing.assert_close(pixels, torch.stack([ours.preprocess(image) for image in images]), rtol=0, atol=1e-5)
    with torch.no_grad():
        image_features, text_features = ours.encode_image(images), ours.encode_text(texts)
        reference = theirs(pixel_values=pixels, **tokens).logits_per_image.sigmoid()
        theirs_image = F.normalize(_features(theirs.get_image_features(pixel_values=pixels)), dim=-1)
        theirs_text = F.normalize(_features(theirs.get_text_features(**tokens)), dim=-1)
    ours_probs = _sigmoid_probabilities(ours.network, image_features, text_features)
    print(f"exported SiglipModel: max abs difference image {(theirs_image - image_features).abs().max().item():.2e}, "
          f"text {(theirs_text - text_features).abs().max().item():.2e}, "
          f"probabilities {(reference - ours_probs).abs().max().item():.2e}")  # fmt: skip
    torch.testing.assert_close(theirs_image, image_features, rtol=0, atol=1e-5)
    torch.testing.assert_close(theirs_text, text_features, rtol=0, atol=1e-5)
    torch.testing.assert_close(reference, ours_probs, rtol=0, atol=1e-5)
    classify = pipeline("zero-shot-image-classification", model=out, device="cpu")
    results = classify(images, candidate_labels=list(COLORS), hypothesis_template="a {} square")
    probs = torch.tensor([[next(r["score"] for r in result if r["label"] == name) for name in COLORS] for result in results])
    print(f"SiglipModel zero-shot pipeline: max abs probability difference {(probs - ours_probs).abs().max().item():.2e}")
    torch.testing.assert_close(probs, ours_probs, rtol=0, atol=1e-5)
    state = init_from(out).state_dict  # and back: the export reads in as the weights we wrote
    for name, weight in ours.state_dict().items():
        torch.testing.assert_close(state[name], weight, rtol=0, atol=0)
