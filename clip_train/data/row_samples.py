"""Rows of a non-tar source as the samples a tar shard gives: the one shape every source yields.

A sample is a dict with `__key__`, `__url__` (the unit it came from), the image bytes under their
format's extension (`jpg`, `png`, `webp`; another format under `jpg`: decoding sniffs the bytes) and
`txt`, the caption in UTF-8 (a cell holding a list or mapping, such as LLaVA's `conversations`, as JSON),
exactly what `clip_train.data.shard_reader` makes of a tar; from there on decoding, bad-sample counting,
shuffling, batching and resume do not know the source. An image that cannot be read leaves the sample
without an image (counted as `missing_image`, with why); a row that cannot be read at all is a sample
with only `__unreadable__`, why (counted as `unreadable_row`).
"""

import json
import os

MEMBERS = {".jpg": "jpg", ".jpeg": "jpeg", ".png": "png", ".webp": "webp"}


def _image_bytes(value, folder: str) -> tuple[bytes, str]:
    """(bytes, extension) of an image cell: a path (relative to `folder`), raw bytes, or {bytes, path}."""
    if isinstance(value, dict):  # Hugging Face's Image feature
        if value.get("bytes"):
            return value["bytes"], os.path.splitext(value.get("path") or "")[1]
        value = value.get("path")
    if isinstance(value, bytes):
        return value, ""
    if not isinstance(value, str) or not value:
        raise FileNotFoundError(f"no image in this row ({value!r})")
    if value.startswith(("http://", "https://")):
        raise ValueError(f"{value} is a URL: nothing is downloaded while training (make shards with img2dataset)")
    path = value if os.path.isabs(value) else os.path.join(folder, value)
    with open(path, "rb") as f:
        return f.read(), os.path.splitext(path)[1]


def _text(caption) -> str:
    """A caption cell as text: a list or mapping (a conversation, `clip_train.vlm`) as JSON, None as empty."""
    if isinstance(caption, list | dict):
        return json.dumps(caption)
    return str(caption if caption is not None else "")


def row_sample(unit: str, key: str, caption, image, folder: str) -> dict:
    """The sample of one row: `image` a path (relative paths against `folder`), bytes, or {bytes, path}."""
    sample = {"__key__": key, "__url__": unit, "txt": _text(caption).encode("utf-8")}
    try:
        data, extension = _image_bytes(image, folder)
    except (OSError, ValueError) as error:
        sample["__missing__"] = f"{error.__class__.__name__}: {error}"
        return sample
    sample[MEMBERS.get(extension.lower(), "jpg")] = data
    return sample


def unreadable_sample(unit: str, key: str, why: str) -> dict:
    """The sample of a row that cannot be read: no image, no caption, and why."""
    return {"__key__": key, "__url__": unit, "__unreadable__": why}
