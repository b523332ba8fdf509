"""Writing our model as a folder OpenCLIP loads, for the standard CLIP ViT (OpenAI's layout, which OpenCLIP keeps).

    write_open_clip(clip_train.load("last.ckpt"), "out/")
    open_clip.create_model_and_transforms("local-dir:out/")   # then equal embeddings

Weight names are mapped in `clip_train.interop.open_clip_keys`. The folder holds our tokenizer and its config
names it, so `open_clip.get_tokenizer("local-dir:DIR")` tokenizes with it (after OpenCLIP's own cleaning: ftfy,
HTML unescaping and collapsed whitespace, which leave ordinary captions' ids as ours).

The image tower goes out either as OpenCLIP's built-in ViT (our tower is a CLIP-layout timm ViT whose activation
is the text tower's) or as OpenCLIP's timm tower (`vision_cfg.timm_model_name`), which builds timm's default
architecture of that name with no further arguments, so it fits any timm trunk built without extra arguments at
the architecture's default size. Anything else raises before a file is written, naming the part OpenCLIP cannot
express.
"""

import json
import os

import torch
from safetensors.torch import save_file

from clip_train.data.tokenizer import Tokenize
from clip_train.inference import ClipModel
from clip_train.interop.open_clip_keys import text_to_open_clip, vision_to_open_clip
from clip_train.interop.pretrained import OPEN_CLIP_FOLDER_CONFIG, OPEN_CLIP_FOLDER_WEIGHTS
from clip_train.interop.timm_tower import timm_image_tower
from clip_train.model import CausalTextTower, DualEncoder

WEIGHTS_FILE = OPEN_CLIP_FOLDER_WEIGHTS[0]  # open_clip_model.safetensors: what OpenCLIP's local-dir loader prefers
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
        return vision_cfg, vision_to_open_clip(state, len(trunk.blocks)), text_activation == "quick_gelu"
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
    weights = {**vision_weights, **text_to_open_clip(state, text_cfg["layers"]), "logit_scale": logit_scale}
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
