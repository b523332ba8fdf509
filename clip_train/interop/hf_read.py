"""Reading a transformers `CLIPModel` or `SiglipModel` folder (as `save_pretrained` or the hub cache lays it out)
into our model config and weights; the weight names are mapped in `clip_train.interop.hf_keys`.

A `CLIPModel` folder:

    config.json (model_type "clip") + model.safetensors | model.safetensors.index.json + shards |
    pytorch_model.bin, and usually the tokenizer files (the folder is then the tokenizer too)

The vision transformer becomes a timm CLIP-layout ViT (pre-norm, no patch bias, LayerNorm eps
1e-5), named after the published size it has, e.g. `vit_base_patch32_clip_quickgelu_224` for
openai/clip-vit-base-patch32, or given its sizes as arguments; the text transformer is our
`CausalTextTower`, which is a `CLIPTextModel`. Tensors are read only (safetensors or
`torch.load(weights_only=True)`).

A `SiglipModel` folder:

    config.json (model_type "siglip") + model.safetensors (or shards, or pytorch_model.bin),
    preprocessor_config.json (mean and std 0.5, the whole image resized), the tokenizer files

The vision transformer becomes a timm SigLIP ViT (patch bias, no class token, attention-pooled "map" head,
LayerNorm eps 1e-6), named after the published shape it has (`vit_base_patch16_siglip_256` for
google/siglip-base-patch16-256) or given its sizes; its pooled features are the shared space, with no
projection. The text transformer is our `SiglipTextTower`, a `SiglipTextModel` whose head is our projection.
`logit_scale` and `logit_bias` come along, so a `loss=siglip` fine-tune starts where the model ended.
"""

import json
import math
import os

import timm
import torch
from safetensors.torch import load_file
from transformers import CLIPConfig, SiglipConfig

from clip_train.interop.hf_keys import clip_to_ours, siglip_to_ours
from clip_train.interop.preprocessor_config import read_preprocessing
from clip_train.interop.pretrained import PretrainedCLIP

# (width, depth, heads, patch size, MLP width) -> timm architecture, without its activation suffix
TIMM_CLIP_VITS = {
    (768, 12, 12, 32, 3072): "vit_base_patch32_clip",
    (768, 12, 12, 16, 3072): "vit_base_patch16_clip",
    (1024, 24, 16, 14, 4096): "vit_large_patch14_clip",
    (1280, 32, 16, 14, 5120): "vit_huge_patch14_clip",
}
CLIP_ACTIVATIONS = ("quick_gelu", "gelu")  # what both timm's CLIP ViTs and our text tower express
CLIP_LAYER_NORM_EPS = 1e-5  # timm's CLIP ViTs' and our text tower's
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")


def _check(config: dict, tower: str, folder: str, activations, layer_norm_eps: float) -> None:
    """ValueError naming `tower`'s `hidden_act` or `layer_norm_eps` when our towers cannot express it."""
    activation = config.get("hidden_act", "quick_gelu")
    if activation not in activations:
        raise ValueError(f"{folder}: {tower} hidden_act={activation!r}; only {sorted(activations)} are supported")
    if not math.isclose(config.get("layer_norm_eps", layer_norm_eps), layer_norm_eps):
        raise ValueError(f"{folder}: {tower} layer_norm_eps={config['layer_norm_eps']}; only {layer_norm_eps} is supported")


def image_tower_config(vision: dict, embed_dim: int, folder: str) -> dict:
    """A `CLIPVisionConfig` dict -> our `ImageTower` config on the timm CLIP ViT of the same shape."""
    _check(vision, "vision_config", folder, CLIP_ACTIVATIONS, CLIP_LAYER_NORM_EPS)
    shape = (vision["hidden_size"], vision["num_hidden_layers"], vision["num_attention_heads"],
             vision["patch_size"], vision["intermediate_size"])  # fmt: skip
    quick = vision.get("hidden_act", "quick_gelu") == "quick_gelu"
    tower = {
        "_target_": "clip_train.model.ImageTower",
        "embed_dim": embed_dim,
        "image_size": vision["image_size"],
        "pool": "token",
    }
    if shape in TIMM_CLIP_VITS:
        return tower | {"model_name": f"{TIMM_CLIP_VITS[shape]}{'_quickgelu' if quick else ''}_224"}
    width, depth, heads, patch, mlp = shape
    return tower | {
        "model_name": "vit_base_patch16_clip_224", "width": width, "depth": depth, "num_heads": heads,
        "patch_size": patch, "mlp_ratio": mlp / width, **({"act_layer": "quick_gelu"} if quick else {}),
    }  # fmt: skip


def text_tower_config(text: dict, embed_dim: int, folder: str) -> dict:
    """A `CLIPTextConfig` dict -> our `CausalTextTower` config."""
    _check(text, "text_config", folder, CLIP_ACTIVATIONS, CLIP_LAYER_NORM_EPS)
    return {
        "_target_": "clip_train.model.CausalTextTower", "embed_dim": embed_dim, "vocab_size": text["vocab_size"],
        "width": text["hidden_size"], "layers": text["num_hidden_layers"], "heads": text["num_attention_heads"],
        "context_length": text["max_position_embeddings"], "mlp_ratio": text["intermediate_size"] / text["hidden_size"],
        "eos_token_id": text.get("eos_token_id"), "activation": text.get("hidden_act", "quick_gelu"),
    }  # fmt: skip


def hf_weights(folder: str) -> dict[str, torch.Tensor]:
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        return {key: value for shard in shards for key, value in load_file(os.path.join(folder, shard)).items()}
    if os.path.isfile(os.path.join(folder, "model.safetensors")):
        return load_file(os.path.join(folder, "model.safetensors"))
    if os.path.isfile(os.path.join(folder, "pytorch_model.bin")):
        return torch.load(os.path.join(folder, "pytorch_model.bin"), map_location="cpu", weights_only=True)
    raise ValueError(f"{folder} has a transformers config.json but no model.safetensors(.index.json) or pytorch_model.bin")


def _tokenizer_folder(folder: str) -> str | None:
    """`folder` when it holds tokenizer files (it is then the tokenizer too), else None."""
    return folder if any(os.path.isfile(os.path.join(folder, name)) for name in TOKENIZER_FILES) else None


def read_hf_clip(folder: str) -> PretrainedCLIP:
    """The `CLIPModel` in `folder` as our model config, weights in our layout and (when present) its tokenizer folder."""
    config = CLIPConfig.from_pretrained(folder)  # fills in the defaults a saved config may leave out
    vision, text = config.vision_config.to_dict(), config.text_config.to_dict()
    embed_dim = config.projection_dim
    state = clip_to_ours(hf_weights(folder), vision["num_hidden_layers"], folder)
    logit_scale = float(state["logit_scale"])
    model_config = {
        "_target_": "clip_train.model.DualEncoder",
        "embed_dim": embed_dim,
        "image_size": vision["image_size"],
        "context_length": text["max_position_embeddings"],
        "init_logit_scale": logit_scale,
        "max_logit_scale": max(math.log(100), logit_scale),
        "image_tower": image_tower_config(vision, embed_dim, folder),
        "text_tower": text_tower_config(text, embed_dim, folder),
    }
    return PretrainedCLIP(model_config, state, _tokenizer_folder(folder), read_preprocessing(folder))


# (width, depth, heads, patch size, MLP width) -> timm architecture, without its image size suffix
TIMM_SIGLIP_VITS = {
    (768, 12, 12, 16, 3072): "vit_base_patch16_siglip",
    (1024, 24, 16, 16, 4096): "vit_large_patch16_siglip",
    (1152, 27, 16, 14, 4304): "vit_so400m_patch14_siglip",
}
# transformers' activation name -> timm's
SIGLIP_ACTIVATIONS = {"gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
SIGLIP_LAYER_NORM_EPS = 1e-6  # timm's SigLIP ViTs'


def siglip_image_tower_config(vision: dict, folder: str) -> dict:
    """A `SiglipVisionConfig` dict -> our `ImageTower` config on the timm SigLIP ViT of the same shape."""
    _check(vision, "vision_config", folder, SIGLIP_ACTIVATIONS, SIGLIP_LAYER_NORM_EPS)
    shape = (vision["hidden_size"], vision["num_hidden_layers"], vision["num_attention_heads"],
             vision["patch_size"], vision["intermediate_size"])  # fmt: skip
    size = vision["image_size"]
    tower = {
        "_target_": "clip_train.model.ImageTower", "embed_dim": vision["hidden_size"], "image_size": size, "pool": "map",
        "projection": "none", "act_layer": SIGLIP_ACTIVATIONS[vision["hidden_act"]],
    }  # fmt: skip
    named = f"{TIMM_SIGLIP_VITS.get(shape)}_{size}"
    if shape in TIMM_SIGLIP_VITS and timm.is_model(named):
        return tower | {"model_name": named}
    width, depth, heads, patch, mlp = shape
    return tower | {
        "model_name": "vit_base_patch16_siglip_224", "width": width, "depth": depth, "num_heads": heads,
        "patch_size": patch, "mlp_ratio": mlp / width,
    }  # fmt: skip


def siglip_text_tower_config(text: dict, folder: str) -> dict:
    """A `SiglipTextConfig` dict -> our `SiglipTextTower` config."""
    _check(text, "text_config", folder, SIGLIP_ACTIVATIONS, SIGLIP_LAYER_NORM_EPS)
    return {
        "_target_": "clip_train.model.SiglipTextTower", "embed_dim": text.get("projection_size") or text["hidden_size"],
        "vocab_size": text["vocab_size"], "width": text["hidden_size"], "layers": text["num_hidden_layers"],
        "heads": text["num_attention_heads"], "context_length": text["max_position_embeddings"],
        "mlp_ratio": text["intermediate_size"] / text["hidden_size"], "activation": text["hidden_act"],
        "layer_norm_eps": text["layer_norm_eps"], "pad_token_id": text.get("pad_token_id"),
    }  # fmt: skip


def read_hf_siglip(folder: str) -> PretrainedCLIP:
    """The `SiglipModel` in `folder` as our model config, weights in our layout, its tokenizer folder (when present)
    and its preprocessing."""
    config = SiglipConfig.from_pretrained(folder)  # fills in the defaults a saved config may leave out
    vision, text = config.vision_config.to_dict(), config.text_config.to_dict()
    image_tower, text_tower = siglip_image_tower_config(vision, folder), siglip_text_tower_config(text, folder)
    if image_tower["embed_dim"] != text_tower["embed_dim"]:
        raise ValueError(
            f"{folder}: the vision width {image_tower['embed_dim']} differs from the text projection size "
            f"{text_tower['embed_dim']}; SigLIP compares them unprojected, so they must be equal"
        )
    state = siglip_to_ours(hf_weights(folder), vision["num_hidden_layers"], folder)
    model_config = {
        "_target_": "clip_train.model.DualEncoder",
        "embed_dim": image_tower["embed_dim"],
        "image_size": vision["image_size"],
        "context_length": text["max_position_embeddings"],
        "init_logit_scale": float(state["logit_scale"]),
        "max_logit_scale": None,  # as loss=siglip: released SigLIP models sit above ln 100
        "init_logit_bias": float(state["logit_bias"]),
        "image_tower": image_tower,
        "text_tower": text_tower,
    }
    return PretrainedCLIP(model_config, state, _tokenizer_folder(folder), read_preprocessing(folder))
