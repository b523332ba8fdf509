"""Opening a checkpoint file a user named (`ckpt_path=`, `clip_train.load`), with messages that say what is wrong.

torch's own errors on a file that is not a checkpoint (an `UnpicklingError`, advice to pass `weights_only=False`)
neither name the file nor help: clip_train's checkpoints hold tensors and plain data only, so that advice would
only open the door to running a foreign pickle. Here the file is named, with what was expected and what it is.
A checkpoint whose model differs from the run's is described in a few lines (`model_differences`).
"""

import os
import warnings
import zipfile

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from clip_train.recipe import Recipe

# settings a resumed run may change: they shape training (memory, freezing, initial values), not the weights
TRAINING_OPTIONS = {"patch_dropout", "grad_checkpointing", "lock", "unlocked_groups", "unlocked_layers", "freeze_norm",
                    "pretrained", "init_from", "init_logit_scale", "init_logit_bias", "max_logit_scale"}  # fmt: skip
EXPECTED = "a checkpoint written by python -m clip_train (checkpoints/last.ckpt, step*.ckpt, hpc_ckpt_*.ckpt)"


def read_checkpoint(path: str, option: str) -> dict:
    """The checkpoint at `path` (tensors memory-mapped, so reading it to check costs little); ValueError naming
    `option`, the file, what was expected and why it is not that. A folder is a sharded checkpoint
    (`trainer=fsdp` with `state_dict_type=sharded`): its weights are assembled whole, its optimizer state left out."""
    if os.path.isdir(path):
        return _read_sharded(path, option)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise
    except Exception as error:
        if not zipfile.is_zipfile(path):
            why = "it is not in torch.save's format at all (an unfinished download, or another kind of file?)"
        else:
            why = f"it is a torch file holding more than tensors and plain data ({error.__class__.__name__})"
        raise ValueError(f"{option}: {path} cannot be read: expected {EXPECTED}, but {why}") from None


def is_sharded_checkpoint(path: str) -> bool:
    """Whether `path` is a folder written as a sharded checkpoint (`trainer.strategy.state_dict_type=sharded`)."""
    return os.path.isfile(os.path.join(path, "meta.pt")) and os.path.isfile(os.path.join(path, ".metadata"))


def _read_sharded(folder: str, option: str) -> dict:
    """A sharded checkpoint folder (one `*.distcp` file per rank, torch.distributed.checkpoint's `.metadata`, and
    Lightning's `meta.pt` with everything but weights and optimizer state) as one checkpoint dict whose
    `state_dict` holds the whole tensors, read in this process alone."""
    if not is_sharded_checkpoint(folder):
        raise ValueError(f"{option}: {folder} is a folder but not a sharded checkpoint (no meta.pt and .metadata): "
                         f"expected {EXPECTED}, or such a folder written under trainer=fsdp")  # fmt: skip
    checkpoint = torch.load(os.path.join(folder, "meta.pt"), map_location="cpu", weights_only=True)
    reader = dcp.FileSystemReader(folder)
    prefix = "state_dict."
    weights = {
        key[len(prefix) :]: torch.empty(entry.size, dtype=entry.properties.dtype)
        for key, entry in reader.read_metadata().state_dict_metadata.items()
        if key.startswith(prefix) and isinstance(entry, TensorStorageMetadata)
    }
    with warnings.catch_warnings():  # that no process group is up: reading in one process is the intent
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load({"state_dict": weights}, storage_reader=reader, no_dist=True)
    return checkpoint | {"state_dict": weights}


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def model_differences(trained: dict, asked: dict, limit: int = 6) -> list[str]:
    """`model.KEY: checkpoint V1, this run V2` for each model setting both set and set differently (the first
    `limit`). A key only one side has is left out (presets gain keys at their defaults over time), and so are
    `TRAINING_OPTIONS`."""
    old, new = _flat(trained), _flat(asked)
    shared = {key for key in set(old) & set(new) if key.rsplit(".", 1)[-1] not in TRAINING_OPTIONS}
    keys = sorted(shared, key=lambda k: (k != "_target_", not k.endswith("_target_"), k))
    lines = [f"model.{k}: checkpoint {old[k]!r}, this run {new[k]!r}" for k in keys if old[k] != new[k]]
    return lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])


def check_resumable(path: str, model: dict, option: str = "ckpt_path") -> None:
    """Raise ValueError before anything is built when the checkpoint at `path` cannot be read or was trained as a
    different model than `model` (this run's resolved model config), in a few lines from its recipe."""
    recipe = Recipe.from_checkpoint(read_checkpoint(path, option))
    if recipe is None:
        raise ValueError(f"{option}: {path} holds no clip_train recipe: expected {EXPECTED}")
    differences = model_differences(recipe.model, model)
    if differences:
        raise ValueError(
            f"{option}: {path} was trained as a different model than this run asks for; set the checkpoint's "
            "model settings (its run's .hydra/config.yaml has them) or start afresh with ckpt_path=null:\n  "
            + "\n  ".join(differences)
        )
