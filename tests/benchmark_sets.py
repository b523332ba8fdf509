"""Tiny sets in CLIP_benchmark's webdataset layout, written as its `webdataset_builder` writes them: webdataset's
ShardWriter, `s%07d` keys, `cls` or multi-line `txt` members, `nshards.txt`, `classnames.txt`,
`zeroshot_classification_templates.txt` and `dataset_type.txt`."""

import io
import os

import webdataset
from helpers import COLORS
from PIL import Image

COLOURS = list(COLORS)  # red, green, blue, yellow: the class names, in class-index order
TEMPLATES = ["a photo of a {c} thing.", "a {c} square."]


def image_bytes(colour: str, index: int, extension: str) -> bytes:
    """A colour square with a white mark placed by `index`, so no two images tie."""
    image = Image.new("RGB", (32, 32), COLORS[colour])
    image.paste((255, 255, 255), (3 * (index % 9), 0, 3 * (index % 9) + 4, 4))
    data = io.BytesIO()
    image.save(data, format={"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[extension], quality=95)
    return data.getvalue()


def write_classification(root, labels: list[int], per_shard: int = 3) -> str:
    """CLIP_benchmark's classification layout: test/{0..N-1}.tar of (image, cls), classnames and templates."""
    os.makedirs(root / "test")
    with webdataset.ShardWriter(str(root / "test" / "%d.tar"), maxcount=per_shard, verbose=0) as sink:
        for index, label in enumerate(labels):
            extension = ("webp", "png", "jpg")[index % 3]
            sink.write({"__key__": f"s{index:07d}", extension: image_bytes(COLOURS[label], index, extension), "cls": label})
        shards = sink.shard
    (root / "test" / "nshards.txt").write_text(f"{shards}\n")
    (root / "classnames.txt").write_text("\n".join(COLOURS) + "\n")
    (root / "zeroshot_classification_templates.txt").write_text("\n".join(TEMPLATES) + "\n")
    return str(root)


def write_retrieval(root, captions: list[list[str]], colours: list[str]) -> str:
    """CLIP_benchmark's retrieval layout: (image, txt with one caption per line) and dataset_type.txt."""
    os.makedirs(root / "test")
    with webdataset.ShardWriter(str(root / "test" / "%d.tar"), maxcount=2, verbose=0) as sink:
        for index, (lines, colour) in enumerate(zip(captions, colours)):
            sink.write({"__key__": f"s{index:07d}", "jpg": image_bytes(colour, index, "jpg"), "txt": "\n".join(lines)})
        shards = sink.shard
    (root / "test" / "nshards.txt").write_text(f"{shards}\n")
    (root / "dataset_type.txt").write_text("retrieval\n")
    return str(root)


RETRIEVAL_CAPTIONS = [["a red square", "red, mark 0"], ["a green square"], ["a blue square", "blue 2", "a square of blue"],
                      ["a yellow square", "yellow 3"], ["a red square again"]]  # fmt: skip
RETRIEVAL_COLOURS = ["red", "green", "blue", "yellow", "red"]
