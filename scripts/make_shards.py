"""Write your own image-caption pairs as training shards (img2dataset layout, with sizes.json).

    # a folder of images, each with a caption file beside it (photo.jpg + photo.txt)
    python scripts/make_shards.py --folder /data/my_photos --out /data/my_shards
    # a CSV with an image path column and a caption column (paths relative to the CSV)
    python scripts/make_shards.py --csv pairs.csv --image-column filepath --caption-column title --out /data/my_shards
    # a JSONL file, one {"image": path, "caption": text} object per line (keys set by the same options)
    python scripts/make_shards.py --jsonl pairs.jsonl --image-column image --caption-column caption --out /data/my_shards \\
        --shard-size 10000 --max-size 512 --workers 8
    # then
    python -m clip_train data.train_shards='/data/my_shards/train-{00000..00009}.tar'

Every image is decoded in full before it is written (by `--workers` processes), so a truncated
or foreign file is caught here, not in training. Image bytes are copied unchanged unless the
longer side exceeds `--max-size` (then resized so that side is `--max-size`, keeping the aspect
ratio, and re-encoded in its own format, a JPEG at quality 90: img2dataset's `keep_ratio_largest` with
`resize_only_if_bigger`) or the format is not jpg/png/webp (then re-encoded as JPEG). Keys are
running numbers in input order, as img2dataset writes them. Each skipped input (no caption file, an
empty caption, a missing or undecodable image) is listed with its reason in `OUT/skipped.tsv`
and counted on stderr; `OUT/sizes.json` gives every shard's sample count.
"""

import argparse
import csv
import io
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator

from PIL import Image

from clip_train.data.shard_writer import Sample, encode_image, write_shards

EXTENSIONS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}
IMAGE_SUFFIXES = set(EXTENSIONS) | {".bmp", ".gif", ".tif", ".tiff"}

# (image path, caption, reason): a reason means the pair is already known to be unusable
Pair = tuple[str, str | None, str | None]


def folder_pairs(folder: str) -> Iterator[Pair]:
    """Every image under `folder` with the `.txt` of the same stem beside it."""
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in IMAGE_SUFFIXES:
                continue
            image_path, caption_path = os.path.join(root, name), os.path.join(root, stem + ".txt")
            if not os.path.isfile(caption_path):
                yield image_path, None, f"no {stem}.txt beside it"
                continue
            try:
                with open(caption_path, encoding="utf-8") as f:
                    yield image_path, f.read().strip(), None
            except UnicodeDecodeError as error:
                yield image_path, None, f"{stem}.txt is not UTF-8 ({error})"


def csv_pairs(path: str, image_column: str, caption_column: str, delimiter: str) -> Iterator[Pair]:
    base = os.path.dirname(os.path.abspath(path))
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter=delimiter):
            yield os.path.join(base, row[image_column]), (row[caption_column] or "").strip(), None


def jsonl_pairs(path: str, image_key: str, caption_key: str) -> Iterator[Pair]:
    """One JSON object per line; image paths relative to the file. A line that is no such object is skipped."""
    base = os.path.dirname(os.path.abspath(path))
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                image, caption = record[image_key], record[caption_key]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                yield f"{path}:{number}", None, f"no {image_key!r} and {caption_key!r} in this line ({error})"
                continue
            yield os.path.join(base, str(image)), str(caption or "").strip(), None


def prepare(pair: Pair, max_size: int | None) -> tuple[bytes, str] | str:
    """(image bytes, format) ready to write, or the reason the pair is skipped. Runs in a worker process."""
    image_path, caption, reason = pair
    if reason is not None:
        return reason
    if not caption:
        return "empty caption"
    try:
        with open(image_path, "rb") as f:
            data = f.read()
        image = Image.open(io.BytesIO(data))
        image.load()  # decodes everything: a truncated file fails here
    except FileNotFoundError:
        return "image file not found"
    except Exception as error:
        return f"unreadable image ({error.__class__.__name__}: {error})"
    image_format = EXTENSIONS.get(os.path.splitext(image_path)[1].lower())
    too_big = max_size is not None and max(image.size) > max_size
    if image_format is None or too_big:
        image_format = image_format or "jpg"
        if image_format == "jpg" and image.mode != "RGB":
            image = image.convert("RGB")
        if too_big:
            scale = max_size / max(image.size)
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.BICUBIC)
        data = encode_image(image, image_format)
    return data, image_format


def _prepare_job(job: tuple[Pair, int | None]) -> tuple[Pair, tuple[bytes, str] | str]:
    pair, max_size = job
    return pair, prepare(pair, max_size)


class Progress:
    """A one-line progress report on stderr, at most twice a second, and a last line at the end."""

    def __init__(self) -> None:
        self.start = self.last = time.monotonic()
        self.done = self.skipped = 0

    def update(self, skipped: bool) -> None:
        self.done += 1
        self.skipped += skipped
        now = time.monotonic()
        if now - self.last > 0.5:
            self.last = now
            self.show(end="\r")

    def show(self, end: str = "\n") -> None:
        rate = self.done / max(time.monotonic() - self.start, 1e-9)
        print(f"{self.done} inputs, {self.skipped} skipped, {rate:.0f}/s", end=end, file=sys.stderr, flush=True)


def samples(pairs: Iterator[Pair], max_size: int | None, workers: int, skipped: list[tuple[str, str]]) -> Iterator[Sample]:
    """Samples in input order, prepared by `workers` processes; each skipped (path, reason) is appended to `skipped`."""
    progress = Progress()
    jobs = ((pair, max_size) for pair in pairs)
    with multiprocessing.Pool(workers) if workers > 1 else _NoPool() as pool:
        index = 0
        for (image_path, caption, _), result in pool.imap(_prepare_job, jobs, chunksize=8):
            progress.update(skipped=isinstance(result, str))
            if isinstance(result, str):
                skipped.append((image_path, result))
                continue
            data, image_format = result
            metadata = {"source": os.path.basename(image_path)}
            yield Sample(key=f"{index:09d}", image=data, caption=caption, image_format=image_format, metadata=metadata)
            index += 1
    progress.show()


class _NoPool:
    """`--workers 1`: the same interface as a process pool, in this process."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def imap(self, function, jobs, chunksize: int):
        return map(function, jobs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--folder", help="images with .txt captions beside them")
    source.add_argument("--csv", help="a CSV of image paths and captions")
    source.add_argument("--jsonl", help="a JSONL file of {image path, caption} objects")
    parser.add_argument("--image-column", default=None, help="CSV column / JSONL key of the image path (filepath / image)")
    parser.add_argument("--caption-column", default=None, help="CSV column / JSONL key of the caption (title / caption)")
    parser.add_argument("--delimiter", default=",", help="CSV delimiter")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--prefix", default="train", help="shard file prefix")
    parser.add_argument("--shard-size", "--samples-per-shard", type=int, default=10_000, help="samples per shard")
    parser.add_argument("--max-size", type=int, default=None, help="shrink images whose longer side exceeds this to it (px)")
    parser.add_argument("--workers", type=int, default=1, help="processes that read, check and resize images")
    args = parser.parse_args()
    if args.shard_size < 1 or args.workers < 1 or (args.max_size is not None and args.max_size < 1):
        parser.error("--shard-size, --workers and --max-size must be positive")
    if args.folder:
        pairs = folder_pairs(args.folder)
    elif args.csv:
        pairs = csv_pairs(args.csv, args.image_column or "filepath", args.caption_column or "title", args.delimiter)
    else:
        pairs = jsonl_pairs(args.jsonl, args.image_column or "image", args.caption_column or "caption")
    skipped: list[tuple[str, str]] = []
    paths = write_shards(args.out, args.prefix, samples(pairs, args.max_size, args.workers, skipped), args.shard_size)
    report = os.path.join(args.out, "skipped.tsv")
    if os.path.exists(report):  # a report from an earlier run would describe other inputs
        os.remove(report)
    if skipped:
        with open(report, "w", encoding="utf-8") as f:
            f.writelines(f"{path}\t{reason}\n" for path, reason in skipped)
        for path, reason in skipped[:20]:
            print(f"skipped {path}: {reason}", file=sys.stderr)
        more = " (first 20 above)" if len(skipped) > 20 else ""
        print(f"skipped {len(skipped)} unreadable inputs{more}; all listed in {args.out}/skipped.tsv", file=sys.stderr)
    if not paths:
        sys.exit("no usable pairs found")
    pattern = f"{os.path.join(args.out, args.prefix)}-{{00000..{len(paths) - 1:05d}}}.tar"
    print(f"wrote {len(paths)} shards: train with data.train_shards='{pattern}' (quoted, so bash keeps the braces)")


if __name__ == "__main__":
    main()
