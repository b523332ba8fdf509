"""model.init_from a transformers CLIPModel folder: equal embeddings, fine-tuning, locking, clear errors."""

import shutil

import pytest
import torch
from hf_clip_models import save_small_clip
from hydra.utils import instantiate
from safetensors.torch import load_file
from transformers import AutoTokenizer, CLIPConfig, CLIPModel

import clip_train
from clip_train.interop import init_from
from clip_train.interop.hf_keys import ours_to_clip
from clip_train.interop.hf_read import image_tower_config
from clip_train.interop.hf_write import clip_layout_differences
from clip_train.interop.warm_start import load_pretrained_weights, start_from_pretrained
from clip_train.train import run

CAPTIONS = ["a red square", "a blue square", "red", "a square that is blue and red"]


def _features(output) -> torch.Tensor:
    """transformers 5 returns the projected features as pooler_output, 4 as a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@pytest.mark.parametrize("hidden_act", ["quick_gelu", "gelu"])
def test_clip_model_reads_into_equal_embeddings_and_probabilities(tmp_path, hidden_act):
    reference = save_small_clip(str(tmp_path / "clip"), hidden_act)
    pretrained = init_from(str(tmp_path / "clip"))
    assert pretrained.tokenizer == str(tmp_path / "clip")
    model = instantiate(pretrained.model_config).eval()
    load_pretrained_weights(model, pretrained)
    tokens = AutoTokenizer.from_pretrained(pretrained.tokenizer)(
        CAPTIONS, padding="max_length", max_length=model.context_length, return_tensors="pt"
    )
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ours_image, ours_text = model.encode_image(pixels), model.encode_text(tokens["input_ids"], tokens["attention_mask"])
        reference_image = _features(reference.get_image_features(pixel_values=pixels))
        reference_text = _features(reference.get_text_features(**tokens))
        reference_probs = reference(pixel_values=pixels, **tokens).logits_per_image.softmax(dim=-1)
    assert reference_image.shape == (3, 24) and reference_text.shape == (4, 24)
    torch.testing.assert_close(ours_image, torch.nn.functional.normalize(reference_image, dim=-1), rtol=0, atol=1e-5)
    torch.testing.assert_close(ours_text, torch.nn.functional.normalize(reference_text, dim=-1), rtol=0, atol=1e-5)
    ours_probs = (model.logit_scale.exp() * ours_image @ ours_text.T).softmax(dim=-1)
    differences = {
        "image": (ours_image - torch.nn.functional.normalize(reference_image, dim=-1)).abs().max().item(),
        "text": (ours_text - torch.nn.functional.normalize(reference_text, dim=-1)).abs().max().item(),
        "probabilities": (ours_probs - reference_probs).abs().max().item(),
    }
    print(f"read_hf_clip {hidden_act}: max abs differences {differences}")
    torch.testing.assert_close(ours_probs, reference_probs, rtol=0, atol=1e-5)


def test_fine_tuning_from_clip_model_keeps_locked_weights_and_its_tokenizer(tmp_path, compose_config, colour_shards):
    save_small_clip(str(tmp_path / "clip"))
    source = init_from(str(tmp_path / "clip")).state_dict
    run(
        compose_config(
            "model=clip_pretrained", f"model.init_from={tmp_path}/clip", "data=webdataset",
            f"data.train_shards='{colour_shards}'", "data.batch_size=8", "data.num_workers=0", "trainer.max_steps=3",
            "logger=[]", "trainer.limit_val_batches=0", "optim.optimizer.lr=1e-3",
            "model.image_tower.lock=true", "model.text_tower.lock=true", "model.text_tower.unlocked_layers=1",
        )
    )  # fmt: skip
    shutil.rmtree(tmp_path / "clip")  # the checkpoint rebuilds without its source
    tuned = clip_train.load(str(tmp_path / "run" / "checkpoints" / "last.ckpt"))
    weights = tuned.state_dict()
    layers = "text_tower.transformer.encoder.layers"
    for name in ("image_tower.trunk.blocks.1.attn.qkv.weight", "image_tower.trunk.norm.weight", f"{layers}.0.mlp.fc1.weight"):
        torch.testing.assert_close(weights[name], source[name], rtol=0, atol=0)  # locked
    for name in ("image_tower.projection.weight", f"{layers}.1.mlp.fc1.weight", "text_tower.projection.weight"):
        assert not torch.equal(weights[name], source[name]), f"{name} did not train"
    assert tuned.tokenizer("a red square")["input_ids"] == [522, 320, 513, 521, 523]  # the source's ids, not a learnt BPE


def test_init_from_errors_name_the_problem(tmp_path, compose_config):
    with pytest.raises(ValueError, match="does not exist: expected a transformers CLIPModel folder"):
        init_from(str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="is in no format this reader knows"):
        init_from(str(tmp_path))
    save_small_clip(str(tmp_path / "clip"))
    with pytest.raises(ValueError, match="use model=clip_pretrained"):
        run(compose_config("model=test", f"+model.init_from={tmp_path}/clip"))
    pretrained = init_from(str(tmp_path / "clip"))
    del pretrained.state_dict["image_tower.trunk.norm_pre.bias"]
    model = instantiate(pretrained.model_config)
    with pytest.raises(ValueError, match=r"missing \['image_tower.trunk.norm_pre.bias'\]"):
        load_pretrained_weights(model, pretrained)


def test_pytorch_model_bin_with_old_buffers_reads_as_the_safetensors(tmp_path):
    """The hub's openai/clip-vit-base-patch32 has pytorch_model.bin holding position_ids buffers too."""
    save_small_clip(str(tmp_path / "clip"))
    from_safetensors = init_from(str(tmp_path / "clip")).state_dict
    weights = load_file(tmp_path / "clip" / "model.safetensors")
    for tower, positions in (("text_model", 16), ("vision_model", 17)):
        weights[f"{tower}.embeddings.position_ids"] = torch.arange(positions)[None]
    torch.save(weights, tmp_path / "clip" / "pytorch_model.bin")
    (tmp_path / "clip" / "model.safetensors").unlink()
    from_bin = init_from(str(tmp_path / "clip")).state_dict
    assert from_bin.keys() == from_safetensors.keys()
    for name, weight in from_safetensors.items():
        torch.testing.assert_close(from_bin[name], weight, rtol=0, atol=0)


@pytest.mark.parametrize("patch_size, preset", [(32, "vit_b32_clip"), (16, "vit_b16_clip")])
def test_openai_vit_b_layouts_are_the_clip_presets(compose_config, patch_size, preset):
    """openai/clip-vit-base-patch32 and -patch16 (transformers' default CLIPConfig sizes) map onto our presets
    weight for weight; built on the meta device, so no memory is spent on ViT-B."""
    config = CLIPConfig(vision_config={"patch_size": patch_size})
    tower = image_tower_config(config.vision_config.to_dict(), config.projection_dim, "openai")
    assert tower["model_name"] == f"vit_base_patch{patch_size}_clip_quickgelu_224" and "width" not in tower
    cfg = compose_config(f"model={preset}")
    assert cfg.model.image_tower.model_name == tower["model_name"] and cfg.model.text_tower.activation == "quick_gelu"
    with torch.device("meta"):
        theirs = CLIPModel(config).state_dict()
        ours = instantiate(cfg.model, text_tower={"vocab_size": config.text_config.vocab_size})
    assert clip_layout_differences(ours.image_tower) == []
    mapped = ours_to_clip(ours.state_dict(), depth=12)
    assert mapped.keys() == theirs.keys()
    assert all(mapped[name].shape == theirs[name].shape for name in theirs)


def test_a_source_without_tokenizer_needs_data_tokenizer(tmp_path, compose_config):
    save_small_clip(str(tmp_path / "clip"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.move(tmp_path / "clip" / name, tmp_path / name)  # the weights alone, as an OpenCLIP file is
    cfg = compose_config("model=clip_pretrained", f"model.init_from={tmp_path}/clip")
    with pytest.raises(ValueError, match="carries no tokenizer and data.tokenizer is unset"):
        start_from_pretrained(cfg)
    typed = compose_config("model=clip_pretrained", f"model.init_from={tmp_path}/clip", f"data.tokenizer={tmp_path}")
    cfg, _ = start_from_pretrained(typed)
    assert cfg.data.tokenizer == str(tmp_path) and cfg.model.image_tower.model_name == "vit_base_patch16_clip_224"
    assert typed == compose_config("model=clip_pretrained", f"model.init_from={tmp_path}/clip", f"data.tokenizer={tmp_path}")
