"""Reading an OpenCLIP CLIP ViT checkpoint (OpenAI's layout, which OpenCLIP keeps) into our model config and weights.

    read_open_clip("open_clip_folder/")   # open_clip_config.json + open_clip_model.safetensors (or .bin)
    read_open_clip("epoch_32.pt")         # a file, with open_clip_config.json or epoch_32.json beside it

Weight names are mapped in `clip_train.interop.open_clip_keys`. Text pooling: OpenCLIP pools at the argmax of the
token ids (its end of text is its highest id) or at the first end-of-text id; our tower pools at the last attended
position. For right-padded captions that end with the end of text these are the same position.

Activation: OpenCLIP's `quick_gelu` flag (OpenAI's weights) sets both towers of its built-in CLIP; ours are a timm
`_quickgelu` ViT (or `act_layer: quick_gelu`) and `activation: quick_gelu` on the text tower. The sizes go through
the transformers reader's `image_tower_config`/`text_tower_config`, so a published shape gets the same timm name
from either format.

Tokenizer: an OpenCLIP checkpoint carries none (its BPE ships inside the open_clip package), so `read_open_clip`
returns `tokenizer=None`: set `data.tokenizer` to the same vocabulary in transformers form, e.g.
`openai/clip-vit-base-patch32` from the hub cache, whose ids equal OpenCLIP's.
"""

import json
import math
import os

import torch
from safetensors.torch import load_file

from clip_train.data.transforms import RESIZE_MODES
from clip_train.interop.hf_read import image_tower_config, text_tower_config
from clip_train.interop.open_clip_keys import text_to_ours, vision_to_ours
from clip_train.interop.pretrained import OPEN_CLIP_FOLDER_CONFIG, OPEN_CLIP_FOLDER_WEIGHTS, PretrainedCLIP

# OpenCLIP model-config options we read or write, with the only values our towers can express.
VISION_OPTIONS_AT_DEFAULT = {
    "ls_init_value": None, "attentional_pool": False, "no_ln_pre": False, "pos_embed_type": "learnable",
    "final_ln_after_pool": False, "pool_type": "tok", "act_kwargs": None, "norm_kwargs": None, "block_type": None,
    "qk_norm": False, "scaled_cosine_attn": False, "scale_heads": False, "scale_attn_inner": False,
    "scale_attn": False, "scale_fc": False, "timm_model_name": None, "output_tokens": False,
}  # fmt: skip
VISION_OPTIONS_READ = {"layers", "width", "head_width", "mlp_ratio", "patch_size", "image_size", "patch_dropout"}
TEXT_OPTIONS_AT_DEFAULT = {
    "ls_init_value": None, "embed_cls": False, "no_causal_mask": False, "final_ln_after_pool": False,
    "proj_bias": False, "proj_type": "linear", "act_kwargs": None, "norm_kwargs": None, "block_type": None,
    "qk_norm": False, "scaled_cosine_attn": False, "scale_heads": False, "scale_attn_inner": False,
    "scale_attn": False, "scale_fc": False, "hf_model_name": None, "output_tokens": False,
}  # fmt: skip
TEXT_OPTIONS_READ = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio", "pool_type", "eos_id",
                     "pad_id", "hf_tokenizer_name", "tokenizer_mode", "tokenizer_kwargs"}  # fmt: skip
MODEL_OPTIONS_READ = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "init_logit_scale", "init_logit_bias",
                      "custom_text", "nonscalar_logit_scale", "cast_dtype"}  # fmt: skip


def _config_beside(path: str) -> str:
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    candidates = [os.path.join(folder, OPEN_CLIP_FOLDER_CONFIG)]
    if os.path.isfile(path):
        candidates.append(os.path.splitext(path)[0] + ".json")
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise ValueError(f"{path}: no OpenCLIP model config beside it (looked for {' or '.join(candidates)})")


def _weights_file(path: str) -> str:
    if os.path.isfile(path):
        return path
    for name in OPEN_CLIP_FOLDER_WEIGHTS:
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    raise ValueError(f"{path}: no {' or '.join(OPEN_CLIP_FOLDER_WEIGHTS)}")


def _load_state(path: str) -> dict[str, torch.Tensor]:
    """Tensors only (safetensors, or torch.load with weights_only); a training checkpoint's state_dict unwrapped."""
    if path.endswith(".safetensors"):
        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
    state = {key.removeprefix("module."): value for key, value in state.items()}  # saved from DDP
    return {key.removeprefix("text."): value for key, value in state.items()}  # CustomTextCLIP keeps text in `text.`


def _check_options(section: str, config: dict, read: set, at_default: dict) -> None:
    for key, value in config.items():
        if key in read:
            continue
        if key not in at_default:
            raise ValueError(f"OpenCLIP {section}.{key}={value!r}: an option this reader does not know")
        if value != at_default[key]:
            standard = at_default[key]
            raise ValueError(f"OpenCLIP {section}.{key}={value!r}: we only read the standard CLIP ViT ({key}={standard!r})")


def _count_blocks(state: dict, prefix: str) -> int:
    return len({key[len(prefix) :].split(".")[0] for key in state if key.startswith(prefix)})


def read_open_clip(path: str) -> PretrainedCLIP:
    """An OpenCLIP CLIP ViT checkpoint (file or hub-layout folder) as our model config and weights.

    Sizes come from the weights' shapes; only the head counts (not in any shape) come from the
    config, with OpenCLIP's defaults (vision heads of 64 channels, 8 text heads) where it is silent.
    """
    with open(_config_beside(path)) as f:
        config = json.load(f)
    preprocessing = _preprocessing(config.get("preprocess_cfg", {}), path)
    config = config.get("model_cfg", config)
    vision, text = config.get("vision_cfg", {}), config.get("text_cfg", {})
    if "multimodal_cfg" in config:
        raise ValueError(f"{path} is an OpenCLIP CoCa: its captioning decoder has no place in our dual encoder")
    unknown = set(config) - MODEL_OPTIONS_READ
    if unknown:
        raise ValueError(f"OpenCLIP model config options {sorted(unknown)}: options this reader does not know")
    if isinstance(vision.get("layers"), list | tuple):
        raise ValueError(f"{path}: an OpenCLIP ResNet image tower (vision_cfg.layers={vision['layers']}); only ViTs are read")
    _check_options("vision_cfg", vision, VISION_OPTIONS_READ, VISION_OPTIONS_AT_DEFAULT)
    _check_options("text_cfg", text, TEXT_OPTIONS_READ, TEXT_OPTIONS_AT_DEFAULT)
    if text.get("pool_type", "argmax") not in ("argmax", "eos"):
        raise ValueError(f"OpenCLIP text_cfg.pool_type={text['pool_type']!r}: our tower pools at the end of text")

    state = _load_state(_weights_file(path))
    activation = "quick_gelu" if config.get("quick_gelu", False) else "gelu"
    embed_dim = state["visual.proj"].shape[1]
    width, _, patch_size, _ = state["visual.conv1.weight"].shape
    grid = math.isqrt(state["visual.positional_embedding"].shape[0] - 1)
    vision_layers = _count_blocks(state, "visual.transformer.resblocks.")
    vocab_size, text_width = state["token_embedding.weight"].shape
    context_length = state["positional_embedding"].shape[0]
    text_layers = _count_blocks(state, "transformer.resblocks.")
    # the sizes in transformers' CLIP config terms, which the transformers reader turns into our towers
    vision_sizes = {"hidden_size": width, "num_hidden_layers": vision_layers, "patch_size": patch_size,
                    "num_attention_heads": width // vision.get("head_width", 64), "image_size": grid * patch_size,
                    "intermediate_size": state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
                    "hidden_act": activation}  # fmt: skip
    text_sizes = {"vocab_size": vocab_size, "hidden_size": text_width, "num_hidden_layers": text_layers,
                  "num_attention_heads": text.get("heads", 8), "max_position_embeddings": context_length,
                  "intermediate_size": state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0], "hidden_act": activation,
                  # where an exported CLIPTextModel pools: OpenCLIP's eos_id, else its highest id (argmax pooling)
                  "eos_token_id": text.get("eos_id", 2) if text.get("pool_type") == "eos" else vocab_size - 1}  # fmt: skip
    logit_scale = state["logit_scale"].reshape(1)  # our layout: (1,), which FSDP can shard
    model_config = {
        "_target_": "clip_train.model.DualEncoder",
        "embed_dim": embed_dim,
        "image_size": vision_sizes["image_size"],
        "context_length": context_length,
        "init_logit_scale": float(logit_scale),
        "max_logit_scale": max(math.log(100), float(logit_scale)),  # OpenCLIP's training clamp
        "image_tower": image_tower_config(vision_sizes, embed_dim, path),
        "text_tower": text_tower_config(text_sizes, embed_dim, path),
    }
    ours = {**vision_to_ours(state, vision_layers), **text_to_ours(state, text_layers), "logit_scale": logit_scale}
    if "logit_bias" in state:
        model_config["init_logit_bias"] = float(state["logit_bias"].reshape(()))
        ours["logit_bias"] = state["logit_bias"].reshape(1)
    return PretrainedCLIP(model_config=model_config, state_dict=ours, tokenizer=None, preprocessing=preprocessing)


def _preprocessing(preprocess_cfg: dict, path: str) -> dict:
    """OpenCLIP's `preprocess_cfg` (mean, std, resize_mode) -> our `data.*` keys; {} for a config without one."""
    preprocessing = {ours: list(preprocess_cfg[theirs]) for theirs, ours in (("mean", "image_mean"), ("std", "image_std"))
                     if theirs in preprocess_cfg}  # fmt: skip
    resize = preprocess_cfg.get("resize_mode")
    if resize is not None and resize not in RESIZE_MODES:
        raise ValueError(f"{path}: preprocess_cfg.resize_mode={resize!r}; only {RESIZE_MODES} are supported")
    return preprocessing | ({"image_resize": resize} if resize else {})
