"""Reading a transformers `SiglipModel` folder (as `save_pretrained` or the hub cache lays it out).

    config.json (model_type "siglip") + model.safetensors (or shards, or pytorch_model.bin),
    preprocessor_config.json (mean and std 0.5, the whole image resized), the tokenizer files

The vision transformer becomes a timm SigLIP ViT (patch bias, no class token, attention-pooled "map" head,
LayerNorm eps 1e-6), named after the published shape it has (`vit_base_patch16_siglip_256` for
google/siglip-base-patch16-256) or given its sizes; its pooled features are the shared space, with no
projection. The text transformer is our `SiglipTextTower`, a `SiglipTextModel` whose head is our projection.
`logit_scale` and `logit_bias` come along, so a `loss=siglip` fine-tune starts where the model ended.
"""

import math
import os

import timm
from transformers import SiglipConfig

from clip_train.interop.hf_clip import TOKENIZER_FILES, hf_weights
from clip_train.interop.hf_siglip_keys import siglip_to_ours
from clip_train.interop.preprocessor_config import read_preprocessing
from clip_train.interop.pretrained import PretrainedCLIP

# (width, depth, heads, patch size, MLP width) -> timm architecture, without its image size suffix
TIMM_SIGLIP_VITS = {
    (768, 12, 12, 16, 3072): "vit_base_patch16_siglip",
    (1024, 24, 16, 16, 4096): "vit_large_patch16_siglip",
    (1152, 27, 16, 14, 4304): "vit_so400m_patch14_siglip",
}
# transformers' activation name -> timm's
ACTIVATIONS = {"gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
LAYER_NORM_EPS = 1e-6  # timm's SigLIP ViTs'


def _check(config: dict, tower: str, folder: str) -> None:
    if config["hidden_act"] not in ACTIVATIONS:
        raise ValueError(f"{folder}: {tower} hidden_act={config['hidden_act']!r}; only {sorted(ACTIVATIONS)} are supported")
    if not math.isclose(config["layer_norm_eps"], LAYER_NORM_EPS):
        raise ValueError(f"{folder}: {tower} layer_norm_eps={config['layer_norm_eps']}; only {LAYER_NORM_EPS} is supported")


def siglip_image_tower_config(vision: dict, folder: str) -> dict:
    """A `SiglipVisionConfig` dict -> our `ImageTower` config on the timm SigLIP ViT of the same shape."""
    _check(vision, "vision_config", folder)
    shape = (vision["hidden_size"], vision["num_hidden_layers"], vision["num_attention_heads"],
             vision["patch_size"], vision["intermediate_size"])  # fmt: skip
    size = vision["image_size"]
    tower = {
        "_target_": "clip_train.model.ImageTower", "embed_dim": vision["hidden_size"], "image_size": size, "pool": "map",
        "projection": "none", "act_layer": ACTIVATIONS[vision["hidden_act"]],
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
    _check(text, "text_config", folder)
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
    has_tokenizer = any(os.path.isfile(os.path.join(folder, name)) for name in TOKENIZER_FILES)
    return PretrainedCLIP(model_config, state, folder if has_tokenizer else None, read_preprocessing(folder))
