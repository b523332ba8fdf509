"""Our own runs as `model.init_from` sources: a checkpoint (`.ckpt`, or a sharded checkpoint folder) or an export.

    python -m clip_train model=clip_pretrained model.init_from=logs/train/runs/RUN/checkpoints/last.ckpt
    python -m clip_train model=clip_pretrained model.init_from=exported/      # python -m clip_train.export's folder

Either is read as `clip_train.load` reads it; its recipe gives the architecture (weight sources off, so
nothing outside it is read), the tokenizer and the image preprocessing. Only the model comes along: the
new run starts its own optimizer, schedule and step count (to continue a run, `ckpt_path` resumes it).
"""

import hashlib
import os
import shutil
import tempfile

from clip_train.checkpoint_file import is_sharded_checkpoint
from clip_train.inference import load
from clip_train.interop.pretrained import PretrainedCLIP


def _tokenizer_folder(tokenizer, files_root: str) -> str:
    """A folder holding `tokenizer`, named by its content under `files_root`, written once (ranks race harmlessly)."""
    staging = tempfile.mkdtemp(prefix=".tokenizer-", dir=files_root)
    tokenizer.save_pretrained(staging)
    digest = hashlib.sha1()
    for name in sorted(os.listdir(staging)):
        with open(os.path.join(staging, name), "rb") as f:
            digest.update(name.encode() + f.read())
    folder = os.path.join(files_root, f"tokenizer-{digest.hexdigest()[:16]}")
    try:
        os.rename(staging, folder)
    except OSError:  # already there: the same files
        shutil.rmtree(staging)
    return folder


def read_own_run(path: str) -> PretrainedCLIP:
    """The model of our checkpoint or export at `path` as a source: its recipe's architecture, every weight, its
    tokenizer (the export folder itself; a checkpoint's carried files written to a folder beside the temp files)
    and its preprocessing."""
    loaded = load(path)
    recipe = loaded.recipe
    if os.path.isdir(path) and not is_sharded_checkpoint(path):
        tokenizer = path  # an export: its tokenizer files lie beside the recipe
    else:
        root = os.path.join(tempfile.gettempdir(), "clip_train_init_from")
        os.makedirs(root, exist_ok=True)
        tokenizer = _tokenizer_folder(loaded.tokenizer, root)
    preprocessing = {"image_mean": list(recipe.image_mean), "image_std": list(recipe.image_std),
                     "image_resize": recipe.image_resize}  # fmt: skip
    return PretrainedCLIP(recipe.model, loaded.state_dict(), tokenizer, preprocessing)
