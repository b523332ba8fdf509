"""OpenCLIP checkpoints in and out, for the standard CLIP ViT (OpenAI's layout, which OpenCLIP keeps).

    read_open_clip("open_clip_folder/")   # open_clip_config.json + open_clip_model.safetensors (or .bin)
    read_open_clip("epoch_32.pt")         # a file, with open_clip_config.json or epoch_32.json beside it
    write_open_clip(clip_train.load("last.ckpt"), "out/")
    open_clip.create_model_and_transforms("local-dir:out/")   # then equal embeddings

The two layouts hold the same tensors under other names:

    OpenCLIP                                     ours
    visual.conv1, .class_embedding (W,)          image_tower.trunk.patch_embed.proj, .cls_token (1, 1, W)
    visual.positional_embedding (N, W)           image_tower.trunk.pos_embed (1, N, W)
    visual.ln_pre, .ln_post                      image_tower.trunk.norm_pre, .norm
    visual.transformer.resblocks.i.*             image_tower.trunk.blocks.i.* (ln_1 norm1, attn.in_proj qkv, ...)
    visual.proj (W, E)                           image_tower.projection.weight (E, W)
    token_embedding, positional_embedding        text_tower.transformer.embeddings.{token,position}_embedding
    transformer.resblocks.i.attn.in_proj (3W, W) text_tower.transformer.encoder.layers.i.self_attn.{q,k,v}_proj
    transformer.resblocks.i.{ln_1, ln_2, mlp}    ...layers.i.{layer_norm1, layer_norm2, mlp.fc1/fc2}
    ln_final, text_projection (W, E)             ...final_layer_norm, text_tower.projection.weight (E, W)

Text pooling: OpenCLIP pools at the argmax of the token ids (its end of text is its highest id)
or at the first end-of-text id; our tower pools at the last attended position. For right-padded
captions that end with the end of text these are the same position.

Activation: OpenCLIP's `quick_gelu` flag (OpenAI's weights) sets both towers of its built-in CLIP;
ours are a timm `_quickgelu` ViT (or `act_layer: quick_gelu`) and `activation: quick_gelu` on the
text tower. The sizes go through the transformers reader's `image_tower_config`/`text_tower_config`,
so a published shape gets the same timm name from either format.

Tokenizer: an OpenCLIP checkpoint carries none (its BPE ships inside the open_clip package), so
`read_open_clip` returns `tokenizer=None`: set `data.tokenizer` to the same vocabulary in
transformers form, e.g. `openai/clip-vit-base-patch32` from the hub cache, whose ids equal OpenCLIP's.
On the way out the folder holds our tokenizer and its config names it, so `open_clip.get_tokenizer
("local-dir:DIR")` tokenizes with it (after OpenCLIP's own cleaning: ftfy, HTML unescaping and
collapsed whitespace, which leave ordinary captions' ids as ours).

The image tower goes out either as OpenCLIP's built-in ViT (our tower is a CLIP-layout timm ViT
whose activation is the text tower's) or as OpenCLIP's timm tower (`vision_cfg.timm_model_name`),
which builds timm's default architecture of that name with no further arguments, so it fits any
timm trunk built without extra arguments at the architecture's default size. Anything else raises
before a file is written, naming the part OpenCLIP cannot express.
"""

import json
import math
import os

import torch
from safetensors.torch import load_file, save_file

from clip_train.data.tokenizer import Tokenize
from clip_train.data.transforms import RESIZE_MODES
from clip_train.inference import ClipModel
from clip_train.interop.hf_clip import image_tower_config, text_tower_config
from clip_train.interop.hf_clip_keys import TEXT_MODEL_LEVEL
from clip_train.interop.pretrained import OPEN_CLIP_FOLDER_CONFIG, OPEN_CLIP_FOLDER_WEIGHTS, PretrainedCLIP
from clip_train.interop.timm_tower import timm_image_tower
from clip_train.model import CausalTextTower, DualEncoder

WEIGHTS_FILE = OPEN_CLIP_FOLDER_WEIGHTS[0]  # open_clip_model.safetensors: what OpenCLIP's local-dir loader prefers
TEXT = "text_tower.transformer." + TEXT_MODEL_LEVEL  # the installed transformers' CLIPTextModel names
TRUNK = "image_tower.trunk."

# (OpenCLIP, ours) module names inside one residual block; each holds a weight and a bias.
VISION_BLOCK = [("ln_1", "norm1"), ("attn.out_proj", "attn.proj"), ("ln_2", "norm2"),
                ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")]  # fmt: skip
TEXT_BLOCK = [("ln_1", "layer_norm1"), ("attn.out_proj", "self_attn.out_proj"), ("ln_2", "layer_norm2"),
              ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")]  # fmt: skip

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


# --- in ---------------------------------------------------------------------------------------


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


def _vision_renames(layers: int) -> list[tuple[str, str]]:
    """(OpenCLIP name, our name) of the vision weights that only change name, both ways."""
    pairs = [(f"visual.{theirs}.{kind}", f"{TRUNK}{mine}.{kind}")
             for theirs, mine in [("ln_pre", "norm_pre"), ("ln_post", "norm")] for kind in ("weight", "bias")]  # fmt: skip
    for i in range(layers):
        block, theirs = f"{TRUNK}blocks.{i}.", f"visual.transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            pairs.append((f"{theirs}attn.in_proj_{kind}", f"{block}attn.qkv.{kind}"))
            pairs += [(f"{theirs}{their_name}.{kind}", f"{block}{my_name}.{kind}") for their_name, my_name in VISION_BLOCK]
    return pairs


def _vision_to_ours(state: dict, layers: int) -> dict[str, torch.Tensor]:
    ours = {
        TRUNK + "patch_embed.proj.weight": state["visual.conv1.weight"],
        TRUNK + "cls_token": state["visual.class_embedding"].reshape(1, 1, -1),
        TRUNK + "pos_embed": state["visual.positional_embedding"].unsqueeze(0),
        "image_tower.projection.weight": state["visual.proj"].T,
    }
    return ours | {mine: state[theirs] for theirs, mine in _vision_renames(layers)}


def _text_renames(layers: int) -> list[tuple[str, str]]:
    """(OpenCLIP name, our name) of the text weights that only change name, both ways (q, k and v do not)."""
    pairs = [(f"ln_final.{kind}", f"{TEXT}final_layer_norm.{kind}") for kind in ("weight", "bias")]
    for i in range(layers):
        layer, theirs = f"{TEXT}encoder.layers.{i}.", f"transformer.resblocks.{i}."
        pairs += [(f"{theirs}{their_name}.{kind}", f"{layer}{my_name}.{kind}")
                  for their_name, my_name in TEXT_BLOCK for kind in ("weight", "bias")]  # fmt: skip
    return pairs


def _text_to_ours(state: dict, layers: int) -> dict[str, torch.Tensor]:
    ours = {
        TEXT + "embeddings.token_embedding.weight": state["token_embedding.weight"],
        TEXT + "embeddings.position_embedding.weight": state["positional_embedding"],
        "text_tower.projection.weight": state["text_projection"].T,
    }
    for i in range(layers):
        layer, theirs = f"{TEXT}encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            for name, part in zip("qkv", state[f"{theirs}attn.in_proj_{kind}"].chunk(3)):
                ours[f"{layer}self_attn.{name}_proj.{kind}"] = part
    return ours | {mine: state[theirs] for theirs, mine in _text_renames(layers)}


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
    ours = {**_vision_to_ours(state, vision_layers), **_text_to_ours(state, text_layers), "logit_scale": logit_scale}
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


# --- out --------------------------------------------------------------------------------------

# `ImageTower` arguments that are ours, not timm's: a tower with any other argument built a trunk
# timm's default for its name does not reproduce.
IMAGE_TOWER_OWN_ARGUMENTS = {"_target_", "model_name", "embed_dim", "image_size", "pool", "pretrained", "projection",
                             "patch_dropout", "grad_checkpointing", "lock", "unlocked_groups", "freeze_norm"}  # fmt: skip


def _activation(module: torch.nn.Module) -> str | None:
    """The activation's name in our configs ("gelu", exact, or "quick_gelu"); None for any other."""
    name = type(module).__name__
    if name == "QuickGELU":
        return "quick_gelu"
    return "gelu" if name == "GELU" and getattr(module, "approximate", "none") == "none" else None


def _clip_layout_mismatch(trunk: torch.nn.Module, pool: str) -> str | None:
    """Why `trunk` is not a CLIP-layout ViT that OpenCLIP's built-in vision tower reproduces; None if it is."""
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(trunk, VisionTransformer):
        return f"{type(trunk).__name__} is no timm VisionTransformer"
    blocks = list(trunk.blocks)
    identity = torch.nn.Identity
    requirements = {
        "pooled at the class token": pool == "token" and trunk.cls_token is not None,
        "no register tokens": trunk.num_reg_tokens == 0 and not trunk.no_embed_class and trunk.pos_embed is not None,
        "a pre-norm (norm_pre)": isinstance(trunk.norm_pre, torch.nn.LayerNorm),
        "no fc_norm or attention pool": isinstance(trunk.fc_norm, identity) and trunk.attn_pool is None,
        "plain patches without bias": type(trunk.patch_embed).__name__ == "PatchEmbed"
        and trunk.patch_embed.proj.bias is None
        and isinstance(trunk.patch_embed.norm, identity),
        "LayerNorm eps 1e-5": all(m.eps == 1e-5 for m in trunk.modules() if isinstance(m, torch.nn.LayerNorm)),
        "standard blocks (no layer scale or q/k norm, qkv bias)": all(
            type(b).__name__ == "Block"
            and b.attn.qkv.bias is not None
            and all(isinstance(m, identity) for m in (b.ls1, b.ls2, b.attn.q_norm, b.attn.norm))
            for b in blocks
        ),
        "GELU or QuickGELU MLPs": all(type(b.mlp).__name__ == "Mlp" and _activation(b.mlp.act) for b in blocks),
    }
    missing = [requirement for requirement, met in requirements.items() if not met]
    return f"not a CLIP-layout ViT (needs {', '.join(missing)})" if missing else None


def _timm_default_mismatch(tower_config: dict, trunk: torch.nn.Module) -> str | None:
    """Why OpenCLIP's timm tower (timm's default architecture for the name) would not be `trunk`; None if it would."""
    import timm

    arguments = sorted(set(tower_config) - IMAGE_TOWER_OWN_ARGUMENTS)
    if arguments:
        return f"OpenCLIP's timm tower passes timm no arguments, and this one has {arguments}"
    default = timm.create_model(tower_config["model_name"], pretrained=False)  # as OpenCLIP's TimmModel builds it
    default.reset_classifier(0, global_pool=tower_config.get("pool", "token"))
    shapes = {key: value.shape for key, value in default.state_dict().items()}
    if shapes != {key: value.shape for key, value in trunk.state_dict().items()}:
        size = default.pretrained_cfg.get("input_size")
        return f"OpenCLIP's timm tower builds timm's default {tower_config['model_name']} (input {size}), of other shapes"
    return None


def _vision_to_open_clip(state: dict, layers: int) -> dict[str, torch.Tensor]:
    """Inverse of `_vision_to_ours`."""
    theirs = {
        "visual.conv1.weight": state[TRUNK + "patch_embed.proj.weight"],
        "visual.class_embedding": state[TRUNK + "cls_token"].reshape(-1),
        "visual.positional_embedding": state[TRUNK + "pos_embed"].squeeze(0),
        "visual.proj": state["image_tower.projection.weight"].T,
    }
    return theirs | {their_name: state[mine] for their_name, mine in _vision_renames(layers)}


def _text_to_open_clip(state: dict, layers: int) -> dict[str, torch.Tensor]:
    """Inverse of `_text_to_ours`."""
    theirs = {
        "token_embedding.weight": state[TEXT + "embeddings.token_embedding.weight"],
        "positional_embedding": state[TEXT + "embeddings.position_embedding.weight"],
        "text_projection": state["text_tower.projection.weight"].T,
    }
    for i in range(layers):
        layer, their_layer = f"{TEXT}encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            parts = [state[f"{layer}self_attn.{name}_proj.{kind}"] for name in "qkv"]
            theirs[f"{their_layer}attn.in_proj_{kind}"] = torch.cat(parts)
    return theirs | {their_name: state[mine] for their_name, mine in _text_renames(layers)}


def _text_config(model: ClipModel, out: str) -> dict:
    """OpenCLIP text_cfg for our causal tower, pooling where ours does, tokenizing with our tokenizer."""
    tower, tokenizer = model.text_tower, model.tokenizer
    if not isinstance(tower, CausalTextTower):
        raise ValueError(
            f"text tower {type(tower).__name__}: OpenCLIP's built-in text tower is CLIP's causal transformer "
            "(model/text_tower=causal_*); a pretrained transformers encoder is not exported to OpenCLIP"
        )
    config = tower.transformer.config
    if config.layer_norm_eps != 1e-5 or config.hidden_act not in ("gelu", "quick_gelu"):
        raise ValueError(f"text tower: OpenCLIP's has LayerNorm eps 1e-5 and GELU or QuickGELU, not {config.hidden_act}")
    eos = tokenizer.eos_token_id
    tokens = Tokenize(tokenizer, model.context_length)(["a photo"])
    last_id = tokens["input_ids"][0, tokens["attention_mask"][0].sum() - 1]
    if eos is None or last_id != eos:
        raise ValueError(
            "tokenizer: it does not end captions with an end-of-text token, where OpenCLIP pools; "
            "our tower pools at the last token, which OpenCLIP cannot"
        )
    # argmax of the ids (any OpenCLIP version) finds the end of text when it is the highest id
    pooling = {"pool_type": "argmax"} if eos == len(tokenizer) - 1 else {"pool_type": "eos", "eos_id": eos}
    return {
        "context_length": model.context_length,
        "vocab_size": config.vocab_size,
        "width": config.hidden_size,
        "heads": config.num_attention_heads,
        "layers": config.num_hidden_layers,
        "mlp_ratio": config.intermediate_size / config.hidden_size,
        **pooling,
        "hf_tokenizer_name": os.path.abspath(out),  # local-dir loads the tokenizer from the folder itself
    }


def _vision_config(model: ClipModel, text_activation: str) -> tuple[dict, dict[str, torch.Tensor], bool]:
    """(OpenCLIP vision_cfg, its visual.* weights, whether it needs quick_gelu) for our image tower."""
    tower, state = timm_image_tower(model, "OpenCLIP"), model.state_dict()
    tower_config = model.recipe.model["image_tower"]
    trunk, size = tower.trunk, model.image_size
    layout = _clip_layout_mismatch(trunk, tower_config.get("pool", "token"))
    if layout is None and _activation(trunk.blocks[0].mlp.act) == text_activation:
        width = trunk.embed_dim
        vision_cfg = {"image_size": size, "layers": len(trunk.blocks), "width": width,
                      "head_width": width // trunk.blocks[0].attn.num_heads, "patch_size": trunk.patch_embed.patch_size[0],
                      "mlp_ratio": trunk.blocks[0].mlp.fc1.out_features / width}  # fmt: skip
        return vision_cfg, _vision_to_open_clip(state, len(trunk.blocks)), text_activation == "quick_gelu"
    if layout is None:
        layout = "a CLIP-layout ViT, but OpenCLIP's built-in towers share one activation and the text tower's differs"
    default = _timm_default_mismatch(tower_config, trunk)
    if default is None:
        vision_cfg = {"timm_model_name": tower_config["model_name"], "timm_model_pretrained": False,
                      "timm_pool": tower_config.get("pool", "token"), "timm_proj": "linear", "image_size": size}  # fmt: skip
        weights = {"visual.trunk." + key: value for key, value in trunk.state_dict().items()}
        if isinstance(tower.projection, torch.nn.Identity):  # the pooled features are the shared space (SigLIP's)
            vision_cfg["timm_proj"] = "none"
        else:
            weights["visual.head.proj.weight"] = tower.projection.weight
        return vision_cfg, weights, text_activation == "quick_gelu"
    raise ValueError(f"image tower {tower_config['model_name']}: OpenCLIP cannot express it: {layout}; {default}")


def write_open_clip(model: ClipModel, out: str) -> None:
    """Write `model` as a folder `open_clip.create_model_and_transforms("local-dir:OUT")` loads.

    The folder: open_clip_config.json (model_cfg + preprocess_cfg), open_clip_model.safetensors,
    and our tokenizer's files (text_cfg.hf_tokenizer_name makes `open_clip.get_tokenizer` use them).
    Every check runs before the first file is written.
    """
    if type(model.network) is not DualEncoder:
        raise ValueError(f"{type(model.network).__name__}: only a plain dual encoder is exported to OpenCLIP's CLIP")
    text_cfg = _text_config(model, out)
    text_activation = model.text_tower.transformer.config.hidden_act
    vision_cfg, vision_weights, quick_gelu = _vision_config(model, text_activation)
    state = model.state_dict()
    logit_scale = state["logit_scale"].reshape(())  # OpenCLIP's default layout is 0-d
    weights = {**vision_weights, **_text_to_open_clip(state, text_cfg["layers"]), "logit_scale": logit_scale}
    model_cfg = {"embed_dim": model.embed_dim, "quick_gelu": quick_gelu, "vision_cfg": vision_cfg, "text_cfg": text_cfg}
    if model.logit_bias is not None:
        model_cfg["init_logit_bias"] = model.logit_bias.item()
        weights["logit_bias"] = state["logit_bias"].reshape(())  # OpenCLIP's default layout is 0-d
    preprocess_cfg = {"size": model.image_size, "mode": "RGB", "mean": list(model.recipe.image_mean),
                      "std": list(model.recipe.image_std), "interpolation": "bicubic",
                      "resize_mode": model.recipe.image_resize}  # as eval_transform resizes  # fmt: skip
    os.makedirs(out, exist_ok=True)
    save_file({key: value.detach().contiguous() for key, value in weights.items()}, os.path.join(out, WEIGHTS_FILE))
    with open(os.path.join(out, OPEN_CLIP_FOLDER_CONFIG), "w") as f:
        json.dump({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}, f, indent=2)
    model.tokenizer.save_pretrained(out)
