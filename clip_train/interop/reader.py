"""The reader that finds out which format a path holds and reads it into a `PretrainedCLIP`."""

import json
import os

from clip_train.interop.export_source import is_clip_train_export, read_clip_train_export
from clip_train.interop.hub_cache import resolve_source
from clip_train.interop.pretrained import OPEN_CLIP_FOLDER_CONFIG, OPEN_CLIP_FOLDER_WEIGHTS, PretrainedCLIP

CHECKPOINT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors")
ACCEPTED_LAYOUTS = (
    "a transformers CLIPModel folder (config.json with model_type 'clip' + model.safetensors or pytorch_model.bin), "
    f"an OpenCLIP checkpoint file ({', '.join(CHECKPOINT_SUFFIXES)}), or an OpenCLIP hub folder "
    f"({' or '.join(OPEN_CLIP_FOLDER_WEIGHTS)} + {OPEN_CLIP_FOLDER_CONFIG}), or a folder written by clip_train.export"
)


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
    """Read the CLIP at `path` (a transformers folder or an OpenCLIP file or folder; `~` expanded), or named by a hub
    id or an OpenCLIP `ARCH/TAG` held in the local Hugging Face cache (`clip_train.interop.hub_cache`).

    Each format's reader is imported only when its format is found.
    """
    path = os.path.expanduser(resolve_source(path))
    if os.path.isdir(path) and _is_transformers_clip(path):
        from clip_train.interop.hf_clip import read_hf_clip

        return read_hf_clip(path)
    if os.path.isdir(path) and is_clip_train_export(path):
        return read_clip_train_export(path)
    if os.path.exists(path) and _is_open_clip(path):
        from clip_train.interop.open_clip_format import read_open_clip

        return read_open_clip(path)
    state = "does not exist" if not os.path.exists(path) else "is in no format this reader knows"
    raise ValueError(f"model.init_from={path} {state}: expected {ACCEPTED_LAYOUTS}")
