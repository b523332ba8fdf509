"""Data loader throughput against the machine's raw image-decode limit, measured in the same run.

    python scripts/benchmark_data.py                                   # the embedded synthetic shards, 1 worker
    python scripts/benchmark_data.py --workers 4 data.train_shards='/data/cc3m/{00000..00331}.tar' model=vit_b16

Two measurements, alternated `--rounds` times so that both see the same machine state (its
speed drifts), each reported as the median over rounds:

- loader: the real training loader of the composed config (`data=...`, any overrides), with
  `--workers` DataLoader workers: read tar members, decode, augment (RandomResizedCrop,
  normalise), tokenize, batch. Timed from the first batch (worker start-up excluded) over
  `--samples` samples; reported per worker (total / workers).
- raw: in this process, PIL decode of the same images (bytes already in memory) and a bicubic
  resize to the model's image size, nothing else: what one core can do at best.

The ratio loader-per-worker / raw says how much of a core the rest of the pipeline costs; the
per-stage rates (each stage alone, one thread) say where it goes. A training run is input-bound
when `train/data_wait` (logged by the throughput callback) is high; add workers until it is not.
"""

import argparse
import io
import itertools
import os
import statistics
import sys
import time

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image

from clip_train.build import data_build_config
from clip_train.data.bad_data import BadSampleCounter
from clip_train.data.pipeline import IMAGE_EXTENSIONS, decode_pair
from clip_train.data.shard_reader import shard_samples
from clip_train.data.tokenizer import Tokenize
from clip_train.paths import CONFIG_DIR


def loader_rate(datamodule, samples: int, warmup_batches: int = 1) -> float:
    """Samples/s of the training loader, all workers together, after its first `warmup_batches` batches."""
    datamodule.setup("fit")
    batches = iter(datamodule.train_dataloader())
    for _ in range(warmup_batches):
        next(batches)
    start, seen = time.perf_counter(), 0
    for batch in batches:
        seen += batch["image"].shape[0]
        if seen >= samples:
            break
    if seen < samples:
        print(f"  (the epoch ended after {seen} samples; raise data.samples_per_epoch for a longer measurement)")
    return seen / (time.perf_counter() - start)


def image_bytes(urls: list[str], count: int) -> list[bytes]:
    """The encoded images of the first `count` samples of `urls`."""
    samples = shard_samples(({"url": url} for url in urls), BadSampleCounter())
    found = (next((s[ext] for ext in IMAGE_EXTENSIONS if ext in s), None) for s in samples)
    return list(itertools.islice((data for data in found if data), count))


def stage_rates(datamodule, count: int) -> dict[str, float]:
    """Samples/s of each loader stage alone, in this process on one thread, over the first `count` samples."""
    torch.set_num_threads(1)  # as in a DataLoader worker
    counter, rates = BadSampleCounter(), {}
    start = time.perf_counter()
    samples = list(itertools.islice(shard_samples(({"url": url} for url in datamodule.train_urls), counter), count))
    rates["read tar"] = len(samples) / (time.perf_counter() - start)
    start = time.perf_counter()
    pairs = [pair for sample in samples if (pair := decode_pair(sample, counter)) is not None]
    rates["decode"] = len(samples) / (time.perf_counter() - start)
    start = time.perf_counter()
    for image, _, _ in pairs:
        datamodule.train_image_transform(image)
    rates["augment"] = len(pairs) / (time.perf_counter() - start)
    tokenize, captions = Tokenize(datamodule.tokenizer, datamodule.context_length), [caption for _, caption, _ in pairs]
    start = time.perf_counter()
    for first in range(0, len(captions), datamodule.batch_size):
        tokenize(captions[first : first + datamodule.batch_size])
    rates["tokenize"] = len(captions) / (time.perf_counter() - start)
    return rates


def raw_rate(images: list[bytes], size: int) -> float:
    """Samples/s of PIL decode + resize to (size, size) alone, in this process."""
    start = time.perf_counter()
    for data in images:
        Image.open(io.BytesIO(data)).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    return len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=2000, help="samples timed per loader measurement")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers (data.num_workers)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating loader/raw measurements")
    args, overrides = parser.parse_known_args()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"data.num_workers={args.workers}", *overrides])
    data_cfg = data_build_config(cfg)  # with the model's image size and context length
    datamodule = instantiate(data_cfg)
    size = data_cfg.image_size
    images = image_bytes(datamodule.train_urls, min(args.samples, 2000))
    if not images:
        sys.exit("no decodable image in the training shards")
    print(f"shards: {len(datamodule.train_urls)} ({datamodule.train_urls[0]} ...), image size {size}, "
          f"batch {datamodule.batch_size}, {args.workers} worker(s), {os.cpu_count()} CPU cores")  # fmt: skip
    loader, raw = [], []
    for round_index in range(args.rounds):
        loader.append(loader_rate(datamodule, args.samples) / max(1, args.workers))
        raw.append(raw_rate(images, size))
        print(f"round {round_index + 1}: loader {loader[-1]:.0f} samples/s per worker, raw decode+resize {raw[-1]:.0f}/s")
    stages = stage_rates(datamodule, len(images))
    print("stages alone, one thread:", ", ".join(f"{name} {rate:.0f}/s" for name, rate in stages.items()))
    loader_median, raw_median = statistics.median(loader), statistics.median(raw)
    print(f"loader (read, decode, augment, tokenize): {loader_median:.0f} samples/s per worker")
    print(f"raw limit (PIL decode + resize, one process): {raw_median:.0f} samples/s")
    print(f"ratio loader/raw: {loader_median / raw_median:.2f}")


if __name__ == "__main__":
    main()
