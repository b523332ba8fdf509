"""A published CLIP in our terms, and the reader that finds out which format a path holds.

Every reader (transformers `CLIPModel` folders in `hf_clip`, OpenCLIP checkpoints in
`open_clip_format`) returns the same `PretrainedCLIP`, so training and export never see
foreign key names or configs.
"""

import json
import os
from dataclasses import dataclass, field

import torch

OPEN_CLIP_FOLDER_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
OPEN_CLIP_FOLDER_CONFIG = "open_clip_config.json"
CHECKPOINT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors")
ACCEPTED_LAYOUTS = (
    "a transformers CLIPModel folder (config.json with model_type 'clip' + model.safetensors or pytorch_model.bin), "
    f"an OpenCLIP checkpoint file ({', '.join(CHECKPOINT_SUFFIXES)}), or an OpenCLIP hub folder "
    f"({' or '.join(OPEN_CLIP_FOLDER_WEIGHTS)} + {OPEN_CLIP_FOLDER_CONFIG})"
)


@dataclass
class PretrainedCLIP:
    """A CLIP's architecture, weights and tokenizer, ready for `instantiate` + `load_state_dict(strict=True)`.

    model_config: a Hydra config dict for `clip_train.model.DualEncoder` (`_target_`, embed_dim,
        image_size, context_length, init_logit_scale, max_logit_scale, and `image_tower` /
        `text_tower` dicts with their own `_target_`). The image tower is an `ImageTower` on a timm
        CLIP-layout ViT (`vit_base_patch32_clip_224`, `..._quickgelu_224`, ...: pre-norm, no patch
        bias), with `width`, `depth`, `num_heads`, `patch_size`, `act_layer` given where the
        architecture's own differ; the text tower a `CausalTextTower` with its `vocab_size`,
        `eos_token_id` and `activation` filled in.
    state_dict: every weight, keyed as our `DualEncoder` names them: `image_tower.trunk.*` (timm's
        names), `image_tower.projection.weight` (embed_dim, width), `text_tower.transformer.*` (the
        installed transformers' `CLIPTextModel` names), `text_tower.projection.weight`, `logit_scale`.
    tokenizer: a local folder `transformers.AutoTokenizer` loads, whose ids the text weights were
        trained on; None when the source carries no tokenizer files.
    """

    model_config: dict
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    tokenizer: str | None = None


def _is_transformers_clip(folder: str) -> bool:
    config = os.path.join(folder, "config.json")
    if not os.path.isfile(config):
        return False
    with open(config) as f:
        return json.load(f).get("model_type") == "clip"


def _is_open_clip(path: str) -> bool:
    if os.path.isfile(path):
        return path.endswith(CHECKPOINT_SUFFIXES)
    has_weights = any(os.path.isfile(os.path.join(path, name)) for name in OPEN_CLIP_FOLDER_WEIGHTS)
    return has_weights and os.path.isfile(os.path.join(path, OPEN_CLIP_FOLDER_CONFIG))


def init_from(path: str) -> PretrainedCLIP:
    """Read the CLIP at `path` (a transformers folder or an OpenCLIP file or folder; `~` expanded).

    Each format's reader is imported only when its format is found.
    """
    path = os.path.expanduser(path)
    if os.path.isdir(path) and _is_transformers_clip(path):
        from clip_train.interop.hf_clip import read_hf_clip

        return read_hf_clip(path)
    if os.path.exists(path) and _is_open_clip(path):
        from clip_train.interop.open_clip_format import read_open_clip

        return read_open_clip(path)
    state = "does not exist" if not os.path.exists(path) else "is in no format this reader knows"
    raise ValueError(f"model.init_from={path} {state}: expected {ACCEPTED_LAYOUTS}")
