"""Write your own image-caption pairs as training shards (img2dataset layout, with sizes.json).

    # a folder of images, each with a caption file beside it (photo.jpg + photo.txt)
    python scripts/make_shards.py --folder /data/my_photos --out /data/my_shards
    # a CSV with an image path column and a caption column (paths relative to the CSV)
    python scripts/make_shards.py --csv pairs.csv --image-column filepath --caption-column title --out /data/my_shards
    # then
    python -m clip_train data.train_shards=/data/my_shards/train-{00000..00009}.tar data.samples_per_epoch=...

Image bytes are copied unchanged (jpg, jpeg, png, webp); keys are running numbers, as
img2dataset writes them. A pair whose image or caption is missing is reported and skipped.
"""

import argparse
import csv
import os
import sys
from collections.abc import Iterator

from clip_train.data.shard_writer import Sample, write_shards

EXTENSIONS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}


def folder_pairs(folder: str) -> Iterator[tuple[str, str]]:
    """(image path, caption) for every image under `folder` with a `.txt` of the same stem."""
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in EXTENSIONS:
                continue
            caption_path = os.path.join(root, stem + ".txt")
            if not os.path.isfile(caption_path):
                print(f"skipping {os.path.join(root, name)}: no {stem}.txt beside it", file=sys.stderr)
                continue
            with open(caption_path, encoding="utf-8") as f:
                yield os.path.join(root, name), f.read().strip()


def csv_pairs(path: str, image_column: str, caption_column: str, delimiter: str) -> Iterator[tuple[str, str]]:
    base = os.path.dirname(os.path.abspath(path))
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter=delimiter):
            yield os.path.join(base, row[image_column]), row[caption_column].strip()


def samples(pairs: Iterator[tuple[str, str]]) -> Iterator[Sample]:
    index = 0
    for image_path, caption in pairs:
        ext = EXTENSIONS.get(os.path.splitext(image_path)[1].lower())
        if ext is None or not os.path.isfile(image_path) or not caption:
            print(f"skipping {image_path}: missing image, unknown format or empty caption", file=sys.stderr)
            continue
        with open(image_path, "rb") as f:
            image = f.read()
        yield Sample(key=f"{index:09d}", image=image, caption=caption, image_format=ext,
                     metadata={"source": os.path.basename(image_path)})
        index += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--folder", help="images with .txt captions beside them")
    source.add_argument("--csv", help="a CSV of image paths and captions")
    parser.add_argument("--image-column", default="filepath")
    parser.add_argument("--caption-column", default="title")
    parser.add_argument("--delimiter", default=",")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--prefix", default="train", help="shard file prefix")
    parser.add_argument("--samples-per-shard", type=int, default=10_000)
    args = parser.parse_args()
    if args.folder:
        pairs = folder_pairs(args.folder)
    else:
        pairs = csv_pairs(args.csv, args.image_column, args.caption_column, args.delimiter)
    paths = write_shards(args.out, args.prefix, samples(pairs), args.samples_per_shard)
    if not paths:
        sys.exit("no pairs found")
    print(f"wrote {len(paths)} shards: {os.path.join(args.out, args.prefix)}-{{00000..{len(paths) - 1:05d}}}.tar")


if __name__ == "__main__":
    main()
