"""clip_train: CLIP-style contrastive image-text pre-training (see README.md).

`clip_train.load(path)` returns a `ClipModel` for inference (see clip_train/inference.py), and
`clip_train.load_vlm(path)` a trained VLM (clip_train/vlm/assistant.py); they are imported on first use
so that `python -m clip_train` reports config errors before heavy imports.
Importing the package registers the config resolvers of `clip_train.machine_defaults`.
"""

from clip_train.machine_defaults import register_resolvers

__all__ = ["ClipModel", "ImageTextIndex", "load", "load_vlm"]

register_resolvers()  # configs read `${loader_workers:...}` and `${precision_for:...}`, wherever they are composed


def __getattr__(name: str):
    if name == "load_vlm":
        from clip_train.vlm.assistant import load_vlm

        return load_vlm
    if name == "ImageTextIndex":
        from clip_train.index import ImageTextIndex

        return ImageTextIndex
    if name in __all__:
        from clip_train import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'clip_train' has no attribute {name!r}")
