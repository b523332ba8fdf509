"""clip_train: CLIP-style contrastive image-text pre-training (see README.md).

`clip_train.load(path)` returns a `ClipModel` for inference (see clip_train/inference.py); it is
imported on first use so that `python -m clip_train` reports config errors before heavy imports.
"""

__all__ = ["ClipModel", "ImageTextIndex", "load"]


def __getattr__(name: str):
    if name == "ImageTextIndex":
        from clip_train.index import ImageTextIndex

        return ImageTextIndex
    if name in __all__:
        from clip_train import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'clip_train' has no attribute {name!r}")
