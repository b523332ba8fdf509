"""OpenCLIP checkpoints in (`read_open_clip`, through `init_from`) and out (`write_open_clip`), each
checked against open_clip's own model: equal normalised embeddings and zero-shot probabilities."""

import json
import math
import os

import pytest
import torch
from helpers import caption_tokenizer, clip_model, colour_samples, perturb_
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from safetensors.torch import save_file

open_clip = pytest.importorskip(
    "open_clip", reason="OpenCLIP interop is checked against open_clip: pip install open-clip-torch"
)

from clip_train.export import export  # noqa: E402
from clip_train.export import main as export_main  # noqa: E402
from clip_train.inference import ClipModel  # noqa: E402
from clip_train.interop import init_from  # noqa: E402
from clip_train.interop.open_clip_read import read_open_clip  # noqa: E402
from clip_train.interop.open_clip_write import write_open_clip  # noqa: E402
from clip_train.recipe import Recipe  # noqa: E402

TOLERANCE = 2e-5  # float32 on the same operations in another order
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
SMALL_OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 64, "heads": 2, "layers": 2},
}


def caption_ids(batch: int, context: int, end_id: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (pad 0) ids of varied lengths: start (end_id - 1), words, end of text (end_id, the highest id)."""
    generator = torch.Generator().manual_seed(seed)
    ids, mask = torch.zeros(batch, context, dtype=torch.long), torch.zeros(batch, context, dtype=torch.long)
    for row, length in enumerate(torch.randint(3, context + 1, (batch,), generator=generator).tolist()):
        ids[row, 0], ids[row, length - 1] = end_id - 1, end_id
        ids[row, 1 : length - 1] = torch.randint(1, end_id - 1, (length - 2,), generator=generator)
        mask[row, :length] = 1
    return ids, mask


def max_differences(image: tuple, text: tuple, logit_scales: tuple) -> dict[str, float]:
    """Max abs differences of (ours, theirs) unit-norm embeddings and of the zero-shot probabilities they give."""
    probs = [(scale.exp() * i @ t.T).softmax(dim=-1) for scale, i, t in zip(logit_scales, image, text)]
    return {name: (a - b).abs().max().item() for name, (a, b) in [("image", image), ("text", text), ("probs", probs)]}


def save_open_clip(folder, quick_gelu: bool, as_file: bool, custom_text: bool) -> tuple[torch.nn.Module, str]:
    """A random small OpenCLIP CLIP (or CustomTextCLIP, its text under `text.`), saved as its hub folder
    (config + safetensors) or as a training checkpoint .pt with <stem>.json beside it."""
    config = {**SMALL_OPEN_CLIP, "quick_gelu": quick_gelu}
    torch.manual_seed(0)
    model = (open_clip.CustomTextCLIP if custom_text else open_clip.CLIP)(**config).eval()
    if custom_text:
        config["custom_text"] = True
    perturb_(model, seed=1)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(42.0))
    os.makedirs(folder, exist_ok=True)
    if as_file:
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, folder / "epoch_3.pt")
        (folder / "epoch_3.json").write_text(json.dumps(config))  # a bare model config, as open_clip's model_configs/
        return model, str(folder / "epoch_3.pt")
    save_file(model.state_dict(), folder / "open_clip_model.safetensors")
    preprocess = {"size": 64, "mean": CLIP_MEAN, "std": CLIP_STD}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config, "preprocess_cfg": preprocess}))
    return model, str(folder)


@pytest.mark.parametrize(
    "quick_gelu, as_file, custom_text",
    [(False, False, False), (True, True, False), (False, False, True)],
    ids=["gelu-hub-folder", "quickgelu-pt-file", "custom-text"],
)
def test_open_clip_checkpoint_reads_into_a_dual_encoder_with_equal_embeddings(tmp_path, quick_gelu, as_file, custom_text):
    theirs, path = save_open_clip(tmp_path / "open_clip", quick_gelu, as_file, custom_text)
    pretrained = init_from(path)
    assert pretrained.tokenizer is None  # OpenCLIP checkpoints carry no tokenizer
    tower = pretrained.model_config["image_tower"]
    assert tower["model_name"] == "vit_base_patch16_clip_224" and tower["num_heads"] == 2  # head_width 32 of 64
    assert tower.get("act_layer") == ("quick_gelu" if quick_gelu else None)
    assert pretrained.model_config["text_tower"]["activation"] == ("quick_gelu" if quick_gelu else "gelu")
    ours = instantiate(pretrained.model_config).eval()
    ours.load_state_dict(pretrained.state_dict, strict=True)

    images = torch.randn(6, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    ids, mask = caption_ids(6, 16, end_id=999, seed=3)
    with torch.no_grad():
        differences = max_differences(
            (ours.encode_image(images), theirs.encode_image(images, normalize=True)),
            (ours.encode_text(ids, mask), theirs.encode_text(ids, normalize=True)),
            (ours.logit_scale, theirs.logit_scale),
        )
    print(f"read_open_clip {'quick_gelu' if quick_gelu else 'gelu'}{' custom_text' if custom_text else ''}: {differences}")
    assert max(differences.values()) < TOLERANCE
    assert ours.logit_scale.item() == pytest.approx(math.log(42.0))


def test_unsupported_open_clip_options_are_named(tmp_path):
    config = {**SMALL_OPEN_CLIP, "vision_cfg": {**SMALL_OPEN_CLIP["vision_cfg"], "ls_init_value": 1e-5}}
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": config}))
    with pytest.raises(ValueError, match="vision_cfg.ls_init_value"):
        read_open_clip(str(tmp_path))


# --- out ----------------------------------------------------------------------------------------


# ordinary captions: OpenCLIP cleans text first (ftfy, HTML entities, runs of whitespace collapsed)
TEXTS = ["a red square", "a big blue circle on a green photo", "something else entirely, with punctuation!", ""]


def assert_open_clip_equal(ours: ClipModel, folder: str, label: str) -> torch.nn.Module:
    # as CLIP_benchmark loads it (`--model local-dir:DIR --pretrained none`): local-dir ignores `pretrained`
    theirs, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}", pretrained="none")
    tokenize = open_clip.get_tokenizer(f"local-dir:{folder}")
    images = [sample.image for sample in colour_samples(5)] + [Image.new("RGB", (90, 50), (200, 30, 60))]
    ids = tokenize(TEXTS)
    torch.testing.assert_close(ids, ours.tokenize(TEXTS)["input_ids"], rtol=0, atol=0)
    pixels = torch.stack([preprocess(image) for image in images])
    torch.testing.assert_close(pixels, torch.stack([ours.preprocess(image.convert("RGB")) for image in images]))
    with torch.no_grad():
        differences = max_differences(
            (ours.encode_image(images), theirs.encode_image(pixels, normalize=True)),
            (ours.encode_text(TEXTS), theirs.encode_text(ids, normalize=True)),
            (ours.logit_scale, theirs.logit_scale),
        )
    print(f"write_open_clip {label}: max abs differences {differences}")
    assert max(differences.values()) < TOLERANCE
    return theirs


@pytest.mark.parametrize("activation", ["gelu", "quick_gelu"])
def test_clip_layout_model_exports_to_open_clips_builtin_vit(tmp_path, activation):
    vit = {"model_name": "vit_base_patch16_clip_224", "width": 48, "depth": 2, "num_heads": 3, "patch_size": 16}
    if activation == "quick_gelu":
        vit["act_layer"] = "quick_gelu"
    siglip = {"init_logit_bias": -10.0} if activation == "gelu" else {}  # loss=siglip's bias travels too
    ours = clip_model(vit, activation, image_size=64, **siglip)
    export(ours, str(tmp_path / "clip_train"))  # a folder `python -m clip_train.export` takes as checkpoint=
    export_main([f"checkpoint={tmp_path / 'clip_train'}", f"out={tmp_path / 'open_clip'}", "format=open_clip"])
    model_cfg = json.loads((tmp_path / "open_clip" / "open_clip_config.json").read_text())["model_cfg"]
    assert "timm_model_name" not in model_cfg["vision_cfg"] and model_cfg["quick_gelu"] == (activation == "quick_gelu")
    assert model_cfg["text_cfg"]["pool_type"] == "argmax"
    theirs = assert_open_clip_equal(ours, str(tmp_path / "open_clip"), f"built-in ViT, {activation}")
    assert (theirs.logit_bias is None) == (ours.logit_bias is None)
    if siglip:
        assert theirs.logit_bias.item() == ours.logit_bias.item()


def test_default_size_timm_tower_exports_to_open_clips_timm_tower(tmp_path):
    """test_vit at its own 160 px, pre-norm-free: no built-in form, but OpenCLIP's timm tower rebuilds it."""
    ours = clip_model({"model_name": "test_vit"}, "quick_gelu", image_size=160)
    write_open_clip(ours, str(tmp_path / "open_clip"))
    vision_cfg = json.loads((tmp_path / "open_clip" / "open_clip_config.json").read_text())["model_cfg"]["vision_cfg"]
    assert vision_cfg["timm_model_name"] == "test_vit"
    assert_open_clip_equal(ours, str(tmp_path / "open_clip"), "timm tower test_vit")


@pytest.mark.parametrize("preset", ["tiny", "test"])
def test_presets_open_clip_cannot_express_raise_before_writing(compose_config, tmp_path, preset):
    """The default hybrid (patch_size=4 at 64 px) and the test preset (patch_size=8 at 32 px) pass timm
    arguments OpenCLIP's timm tower cannot, and neither is a CLIP-layout ViT."""
    tokenizer = caption_tokenizer()
    cfg = compose_config(f"model={preset}", f"model.text_tower.vocab_size={len(tokenizer)}")
    model_config = OmegaConf.to_container(cfg.model, resolve=True)
    recipe = Recipe(model=model_config, image_mean=CLIP_MEAN, image_std=CLIP_STD)
    ours = ClipModel(instantiate(model_config), tokenizer, recipe)
    with pytest.raises(ValueError, match=f"image tower {cfg.model.image_tower.model_name}: OpenCLIP cannot express it"):
        write_open_clip(ours, str(tmp_path / "open_clip"))
    assert not os.path.exists(tmp_path / "open_clip")
