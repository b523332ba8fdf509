"""Caption a folder of images with a trained CoCa model; prints JSON {path: caption}.

    python -m clip_train.caption checkpoint=logs/train/runs/RUN/checkpoints/last.ckpt images=photos/
    python -m clip_train.caption checkpoint=exported/ images=photos/ beams=3 max_length=20 device=cuda

checkpoint: a Lightning checkpoint or a folder written by `clip_train.export`. Images are the
files of `images` (not its subfolders) with an image extension, in sorted order.
"""

import json
import os
import sys

from clip_train.cli import refuse_repeated_keys
from clip_train.data.pipeline import IMAGE_EXTENSIONS
from clip_train.inference import load

USAGE = "usage: python -m clip_train.caption checkpoint=PATH images=DIR [beams=1] [max_length=N] [device=cpu]"


def image_paths(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"images={folder} is not a folder")
    names = sorted(n for n in os.listdir(folder) if n.lower().rsplit(".", 1)[-1] in (*IMAGE_EXTENSIONS, "bmp", "gif"))
    if not names:
        raise ValueError(f"images={folder} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return [os.path.join(folder, name) for name in names]


def main(argv: list[str]) -> None:
    if not all("=" in arg for arg in argv):
        sys.exit(USAGE)
    refuse_repeated_keys(argv)
    options = dict(arg.split("=", 1) for arg in argv)
    unknown = set(options) - {"checkpoint", "images", "beams", "max_length", "device"}
    if unknown or not {"checkpoint", "images"} <= set(options):
        sys.exit(f"unknown option(s) {sorted(unknown)}; {USAGE}" if unknown else USAGE)
    paths = image_paths(options["images"])
    model = load(options["checkpoint"], device=options.get("device", "cpu"))
    max_length = int(options["max_length"]) if "max_length" in options else None
    captions = model.caption(paths, beams=int(options.get("beams", 1)), max_length=max_length)
    print(json.dumps(dict(zip(paths, captions)), indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
