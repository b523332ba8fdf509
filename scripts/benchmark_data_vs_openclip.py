"""Our training data loader against OpenCLIP's own webdataset loader, on the same shards, in one run.

    python scripts/benchmark_data_vs_openclip.py                          # both settings, 1 worker, 3 rounds
    python scripts/benchmark_data_vs_openclip.py --setting 224 --samples 5000 --rounds 5 --out data_vs_openclip.json
    python scripts/benchmark_data_vs_openclip.py --setting 64 data.batch_size=256   # further overrides: our config

OpenCLIP is never a dependency of clip_train: it runs only as a subprocess in the separate venv
that scripts/benchmark_vs_openclip.py describes (`--openclip-python`; this script stops at once,
saying how to make it, when that Python or its `open_clip_train` is missing).

Settings (`--setting 64|224|both`): 64 px crops from 128-px JPEGs (our `tiny` preset: 32 tokens),
and 224 px crops from 256-px JPEGs, img2dataset's usual resize (our `vit_b32` preset: 77
tokens). The shards are synthetic scenes (`clip_train.data.world.scenes`, flat shapes on plain
backgrounds, not photos) drawn at twice the source size and saved as JPEG (quality 95), then
turned into shards by scripts/make_shards.py `--max-size` (the longer side, the whole side here:
the scenes are square), which re-encodes them as JPEG quality 90. Their edges are smooth but
they hold less detail than photos, so both sides decode them faster than photos of that size.

What is measured: each side's training DataLoader with `--workers` worker processes, timed
over `--samples` samples, in samples/s per worker (total / workers), once both are in their
steady state: after the first batch (worker start-up, the first fill of the shuffle buffers)
and 4000 more samples per worker (OpenCLIP's buffer grows from 1000 to 5000 samples meanwhile,
reading two samples per sample out); the shards hold enough samples that no buffer runs dry
in the timed ones. Each round times ours, then
OpenCLIP's (started anew), so both see the same machine state (its speed drifts); reported
are every round, the median of each side and the ratio of the medians, ours / OpenCLIP.

Why it is fair: the same tar shards, batch size, context length, crop and worker count; both
read tar members, decode, shuffle, crop, tokenize and batch in their workers:

- ours: `ShardDataModule.train_dataloader()` of the composed config (`data=webdataset`), exactly
  what training uses at the time: reader ranges, read and decode (`clip_train.data.image_decode`:
  torchvision's decode_jpeg, or PIL reducing on decode), shuffle buffer 2000, RandomResizedCrop
  (scale 0.9-1, antialiased bicubic) on uint8, batches left uint8 for the device to normalise,
  one tokenizer call per batch with the byte-level BPE learnt from the shards' captions (Rust `tokenizers`).
- OpenCLIP: `open_clip_train.data.get_wds_dataset` as its trainer calls it, with
  `open_clip.image_transform(size, is_train=True)` (what `create_model_and_transforms` builds for
  ViT-B-32 at that size: RandomResizedCrop scale 0.9-1 bicubic, to tensor, normalise) and
  `open_clip.get_tokenizer("ViT-B-32")` (CLIP's BPE in Python, with ftfy and whitespace
  cleaning), one caption at a time; shard shuffle, then sample shuffle buffer 5000.

Its tar reader is built with `eof_value=None` where webdataset has that parameter (1.0:
otherwise `KeyError: 'fname'`), the run-time fix scripts/benchmark_vs_openclip.py's launcher
applies too; no OpenCLIP code is copied or changed.
"""

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from benchmark import subprocess_env
from benchmark_data import loader_rate
from benchmark_vs_openclip import package_versions
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from clip_train.build import data_build_config
from clip_train.data.world.scenes import make_pair
from clip_train.paths import CONFIG_DIR

MAKE_SHARDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "make_shards.py")
SHARD_SIZE = 1024
OPENCLIP_SHUFFLE_BUFFER = 5000  # samples; ours holds 2000
OPENCLIP_BUFFER_GROWTH = 4000  # samples out per worker until its buffer is full (it starts with 1000)
DIFFERENCES = [
    "tokenizer: ours the byte-level BPE learnt from the captions (Rust, one call per batch); "
    "OpenCLIP CLIP's BPE (Python, ftfy and whitespace cleaning, one caption at a time)",
    "sample shuffle buffer: ours 2000; OpenCLIP 5000 (1000 before the first sample), after a shard shuffle",
    "images leave our workers as uint8 (normalised on the device after transfer); OpenCLIP's as normalised float",
]


@dataclass(frozen=True)
class Setting:
    """Shards of square JPEGs `source_size` px wide, read by our loader for the model preset `model`."""

    source_size: int
    model: str


SETTINGS = {"64": Setting(source_size=128, model="tiny"), "224": Setting(source_size=256, model="vit_b32")}

OPENCLIP_LOADER = '''\
"""Samples/s of OpenCLIP's training loader; written by clip_train's scripts/benchmark_data_vs_openclip.py.

    python openclip_loader_rate.py SHARDS NUM_SAMPLES IMAGE_SIZE CONTEXT_LENGTH BATCH_SIZE WORKERS \\
        WARMUP_BATCHES TIMED_SAMPLES

Prints {"samples_per_sec": all workers together after WARMUP_BATCHES batches, "samples": timed} as JSON.
"""

import functools
import inspect
import json
import sys
import time

import open_clip
import open_clip_train.data
from open_clip_train.params import parse_args
from webdataset.tariterators import tar_file_expander

if "eof_value" in inspect.signature(tar_file_expander).parameters:
    # webdataset 1.0 ends each shard with a marker sample that open_clip_train cannot group (KeyError: 'fname')
    open_clip_train.data.tar_file_expander = functools.partial(tar_file_expander, eof_value=None)


def main(shards, num_samples, image_size, context_length, batch_size, workers, warmup_batches, timed_samples):
    args = parse_args([
        "--train-data", shards, "--train-num-samples", num_samples, "--dataset-type", "webdataset",
        "--batch-size", batch_size, "--workers", workers,
    ])
    args.world_size = 1  # open_clip_train.main sets it in its distributed set-up
    preprocess = open_clip.image_transform(int(image_size), is_train=True)
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=int(context_length))
    data = open_clip_train.data.get_wds_dataset(args, preprocess, is_train=True, tokenizer=tokenizer)
    batches = iter(data.dataloader)
    for _ in range(int(warmup_batches)):
        next(batches)
    start, seen = time.perf_counter(), 0
    for images, _ in batches:
        seen += images.shape[0]
        if seen >= int(timed_samples):
            break
    print(json.dumps({"samples_per_sec": seen / (time.perf_counter() - start), "samples": seen}))


if __name__ == "__main__":
    main(*sys.argv[1:])
'''


def parse_args() -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--setting", choices=[*SETTINGS, "both"], default="both", help="output image size (px)")
    parser.add_argument("--samples", type=int, default=2000, help="samples timed per measurement")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers of each side")
    parser.add_argument("--rounds", type=int, default=3, help="alternating ours/OpenCLIP measurements")
    parser.add_argument(
        "--openclip-python",
        default="/work/bench-venv/bin/python",
        help="the Python of the separate venv that has open-clip-torch (see the docstring)",
    )
    parser.add_argument("--out", default="benchmark_data_vs_openclip.json", help="where to write the results as JSON")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "benchmark_data_vs_openclip"),
                        help="the shards (kept for the next run) and OpenCLIP's loader script go here")  # fmt: skip
    args, overrides = parser.parse_known_args()
    if min(args.samples, args.workers, args.rounds) < 1:
        parser.error("--samples, --workers and --rounds must be positive")
    return args, overrides


def check_openclip_python(python: str) -> None:
    """Stops the run at once if `python` cannot import OpenCLIP's training code."""
    how = "create it as the docstring of scripts/benchmark_vs_openclip.py says, or pass --openclip-python"
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        sys.exit(f"no OpenCLIP venv: {python} is not an executable Python; {how}")
    found = subprocess.run([python, "-c", "import open_clip_train.data"], capture_output=True, text=True)
    if found.returncode != 0:
        sys.exit(f"{python} cannot import open_clip_train ({found.stderr.strip().splitlines()[-1]}); {how}")


def scene_shards(folder: str, source_size: int, count: int, num_shards: int) -> str:
    """`count` scenes as `num_shards` shards of JPEGs `source_size` px wide, written by make_shards.py
    unless `folder` holds them already; returns their brace pattern."""
    pattern = os.path.join(folder, f"train-{{00000..{num_shards - 1:05d}}}.tar")
    if os.path.exists(os.path.join(folder, "sizes.json")):  # make_shards.py writes it last
        return pattern
    print(f"writing {count} scenes as {source_size}-px JPEG shards to {folder}", flush=True)
    images = os.path.join(folder, "images")
    os.makedirs(images, exist_ok=True)
    for index in range(count):
        image, caption, _ = make_pair(0, index, 2 * source_size)
        image.save(os.path.join(images, f"{index:06d}.jpg"), quality=95)
        with open(os.path.join(images, f"{index:06d}.txt"), "w", encoding="utf-8") as f:
            f.write(caption)
    command = [
        sys.executable, MAKE_SHARDS, "--folder", images, "--out", folder, "--max-size", str(source_size),
        "--shard-size", str(math.ceil(count / num_shards)), "--workers", str(os.cpu_count() or 1),
    ]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(images)
    return pattern


def openclip_rate(args, loader_script: str, shards: str, num_samples: int, data_cfg, warmup_batches: int) -> float:
    """Samples/s per worker of OpenCLIP's loader, run in its venv."""
    command = [
        args.openclip_python, loader_script, shards, str(num_samples), str(data_cfg.image_size),
        str(data_cfg.context_length), str(data_cfg.batch_size), str(args.workers), str(warmup_batches),
        str(args.samples),
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, env=subprocess_env())
    if run.returncode != 0:
        raise RuntimeError(f"OpenCLIP's loader failed (exit code {run.returncode}):\n{run.stderr[-4000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])["samples_per_sec"] / args.workers


def measure(args, overrides: list[str], name: str, loader_script: str) -> dict:
    """All rounds of one setting: both loaders on the same shards."""
    setting = SETTINGS[name]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train", overrides=[f"model={setting.model}", "data=webdataset", f"data.num_workers={args.workers}", *overrides]
        )
    batch = cfg.data.batch_size
    warmup_batches = 1 + math.ceil(args.workers * OPENCLIP_BUFFER_GROWTH / batch)
    # the warm-up and timed samples with no shuffle buffer running dry, in whole batches of every worker (our epoch
    # reads each sample once), and a shard per worker (OpenCLIP needs it)
    needed = args.samples + args.workers * (OPENCLIP_BUFFER_GROWTH + OPENCLIP_SHUFFLE_BUFFER + 2 * batch)
    count = math.ceil(needed / (batch * args.workers)) * batch * args.workers
    num_shards = max(args.workers, math.ceil(count / SHARD_SIZE))
    folder = os.path.join(args.workdir, f"scenes-{setting.source_size}px-{count}-in-{num_shards}")
    cfg.data.train_shards = scene_shards(folder, setting.source_size, count, num_shards)
    cfg.data = data_build_config(cfg)  # with the model's image size and context length
    datamodule = instantiate(cfg.data)
    print(f"\n{cfg.data.image_size} px from {setting.source_size}-px JPEGs: {cfg.data.train_shards} ({count} samples), "
          f"batch {cfg.data.batch_size}, {cfg.data.context_length} tokens, {args.workers} worker(s)")  # fmt: skip
    ours, openclip = [], []
    for round_index in range(args.rounds):
        ours.append(loader_rate(datamodule, args.samples, warmup_batches) / args.workers)
        openclip.append(openclip_rate(args, loader_script, cfg.data.train_shards, count, cfg.data, warmup_batches))
        print(f"round {round_index + 1}: ours {ours[-1]:.0f}, OpenCLIP {openclip[-1]:.0f} samples/s per worker")
    ours_median, openclip_median = statistics.median(ours), statistics.median(openclip)
    return {
        "image_size": cfg.data.image_size,
        "source_jpeg_size": setting.source_size,
        "our_model_preset": setting.model,
        "batch_size": cfg.data.batch_size,
        "context_length": cfg.data.context_length,
        "shards": cfg.data.train_shards,
        "shard_samples": count,
        "ours": {"per_round": ours, "median": ours_median},
        "openclip": {"per_round": openclip, "median": openclip_median},
        "ratio_ours_over_openclip": ours_median / openclip_median,
    }


def main() -> None:
    args, overrides = parse_args()
    check_openclip_python(args.openclip_python)
    os.makedirs(args.workdir, exist_ok=True)
    loader_script = os.path.join(args.workdir, "openclip_loader_rate.py")
    with open(loader_script, "w") as f:
        f.write(OPENCLIP_LOADER)
    names = list(SETTINGS) if args.setting == "both" else [args.setting]
    settings = {name: measure(args, overrides, name, loader_script) for name in names}
    modules = ["torch", "torchvision", "pillow", "webdataset"]
    result = {
        "settings": settings,
        "samples": args.samples,
        "workers": args.workers,
        "rounds": args.rounds,
        "cpu_cores": os.cpu_count(),
        "versions": {
            "ours": package_versions(sys.executable, [*modules, "tokenizers"]),
            "openclip": package_versions(args.openclip_python, [*modules, "open_clip_torch"]),
        },
        "differences": DIFFERENCES,
    }
    print(f"\nsamples/s per worker process, median of {args.rounds} round(s), {args.samples} samples timed each")
    print(f"{'setting':28}{'ours':>8}{'OpenCLIP':>10}{'ours/OpenCLIP':>15}")
    for measured in settings.values():
        label = f"{measured['image_size']} px from {measured['source_jpeg_size']}-px JPEGs"
        ours, openclip = measured["ours"]["median"], measured["openclip"]["median"]
        print(f"{label:28}{ours:8.0f}{openclip:10.0f}{measured['ratio_ours_over_openclip']:15.2f}")
    print(f"versions: ours {result['versions']['ours']}; OpenCLIP {result['versions']['openclip']}")
    print("differences left:", *(f"  - {difference}" for difference in DIFFERENCES), sep="\n")
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
