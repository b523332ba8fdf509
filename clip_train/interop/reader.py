"""The reader that finds out which format a path holds and reads it into a `PretrainedCLIP`."""

import json
import os

from clip_train.checkpoint_file import is_sharded_checkpoint
from clip_train.interop.hub_cache import resolve_source
from clip_train.interop.pretrained import OPEN_CLIP_FOLDER_CONFIG, OPEN_CLIP_FOLDER_WEIGHTS, PretrainedCLIP
from clip_train.recipe import Recipe

CHECKPOINT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors")
OWN_CHECKPOINT_SUFFIX = ".ckpt"  # Lightning's, as python -m clip_train writes them
ACCEPTED_LAYOUTS = (
    "a transformers CLIPModel folder (config.json with model_type 'clip') or SiglipModel folder ('siglip'), each "
    "with model.safetensors or pytorch_model.bin, "
    f"an OpenCLIP checkpoint file ({', '.join(CHECKPOINT_SUFFIXES)}), or an OpenCLIP hub folder "
    f"({' or '.join(OPEN_CLIP_FOLDER_WEIGHTS)} + {OPEN_CLIP_FOLDER_CONFIG}), or a clip_train checkpoint (.ckpt or a "
    "sharded checkpoint folder) or export folder"
)


def _transformers_model_type(folder: str) -> str | None:
    """The `model_type` of the transformers config.json in `folder`, or None when there is none."""
    config = os.path.join(folder, "config.json")
    if not os.path.isfile(config):
        return None
    with open(config) as f:
        return json.load(f).get("model_type")


def _is_own_run(path: str) -> bool:
    """A clip_train checkpoint file or folder, or a `clip_train.export` folder (of any recipe layout: `Recipe.read`
    tells an old export's `config.json` from a transformers model's)."""
    if os.path.isfile(path):
        return path.endswith(OWN_CHECKPOINT_SUFFIX)
    if not os.path.isdir(path):
        return False
    if is_sharded_checkpoint(path):
        return True
    try:
        return Recipe.read(path) is not None
    except ValueError:  # a recipe of a layout this version cannot read: still an export, which `load` explains
        return True


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
    model_type = _transformers_model_type(path) if os.path.isdir(path) else None
    if model_type == "clip":
        from clip_train.interop.hf_read import read_hf_clip

        return read_hf_clip(path)
    if model_type == "siglip":
        from clip_train.interop.hf_read import read_hf_siglip

        return read_hf_siglip(path)
    if model_type is None and _is_own_run(path):
        from clip_train.interop.own_run import read_own_run

        return read_own_run(path)
    if os.path.exists(path) and _is_open_clip(path):
        from clip_train.interop.open_clip_read import read_open_clip

        return read_open_clip(path)
    state = "does not exist" if not os.path.exists(path) else "is in no format this reader knows"
    raise ValueError(f"model.init_from={path} {state}: expected {ACCEPTED_LAYOUTS}")
