"""Write image-text pairs as WebDataset tar shards in the img2dataset layout.

Each sample is `KEY.jpg` (or `.png`/`.webp`), `KEY.txt` and optionally `KEY.json`; keys are
digit strings (no dots: webdataset splits a member name at its first dot). Beside the shards
goes `sizes.json`, `{shard file name: sample count}`, which the data module reads to size
epochs without scanning the tars.
"""

import io
import json
import os
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field

from PIL import Image


@dataclass
class Sample:
    """One pair. `image` is a PIL image (encoded as `image_format`) or already-encoded bytes."""

    key: str
    image: Image.Image | bytes
    caption: str
    metadata: dict = field(default_factory=dict)
    image_format: str = "jpg"


def encode_image(image: Image.Image, image_format: str) -> bytes:
    buffer = io.BytesIO()
    pil_format = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[image_format]
    image.save(buffer, format=pil_format, **({"quality": 90} if pil_format == "JPEG" else {}))
    return buffer.getvalue()


def _add_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mtime = 0  # byte-identical shards for identical samples
    tar.addfile(info, io.BytesIO(payload))


def write_shard(path: str, samples: Iterable[Sample]) -> int:
    """Write `samples` to one tar at `path`; returns the number written."""
    count = 0
    with tarfile.open(path, "w") as tar:
        for sample in samples:
            image = sample.image if isinstance(sample.image, bytes) else encode_image(sample.image, sample.image_format)
            _add_member(tar, f"{sample.key}.{sample.image_format}", image)
            _add_member(tar, f"{sample.key}.txt", sample.caption.encode("utf-8"))
            if sample.metadata:
                _add_member(tar, f"{sample.key}.json", json.dumps(sample.metadata).encode("utf-8"))
            count += 1
    return count


def write_shards(out_dir: str, prefix: str, samples: Iterable[Sample], samples_per_shard: int) -> list[str]:
    """Split `samples` into `prefix-00000.tar`, `prefix-00001.tar`, ... under `out_dir`.

    Returns the shard paths in order and merges their sizes into `out_dir/sizes.json`.
    """
    os.makedirs(out_dir, exist_ok=True)
    paths, sizes, chunk = [], {}, []

    def flush() -> None:
        path = os.path.join(out_dir, f"{prefix}-{len(paths):05d}.tar")
        sizes[os.path.basename(path)] = write_shard(path, chunk)
        paths.append(path)
        chunk.clear()

    for sample in samples:
        chunk.append(sample)
        if len(chunk) == samples_per_shard:
            flush()
    if chunk:
        flush()
    sizes_path = os.path.join(out_dir, "sizes.json")
    if os.path.exists(sizes_path):
        with open(sizes_path) as f:
            sizes = {**json.load(f), **sizes}
    with open(sizes_path, "w") as f:
        json.dump(sizes, f, indent=1, sort_keys=True)
    return paths
