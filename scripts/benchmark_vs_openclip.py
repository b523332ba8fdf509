"""Training throughput of our `tiny` preset against OpenCLIP's trainer, on the same shards, in one run.

OpenCLIP is never a dependency of clip_train: it lives in a separate virtual environment,
outside the repository, that this script only starts as a subprocess. Create it once:

    python -m venv /work/bench-venv
    /work/bench-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 \
        'open-clip-torch[training]==3.3.0' pandas timm transformers
    /work/bench-venv/bin/pip install webdataset==1.0.2

(`open_clip_train` ships inside the open-clip-torch wheel. Its `training` extra pins webdataset<=0.2.86,
so asking for 1.0.2 in the same command is refused; the second command replaces it with 1.0.2, the
reader our trainer uses, whose `eof_value` the launcher's fix below needs.)

then, from the repository root, with clip_train installed in the current Python:

    python scripts/benchmark_vs_openclip.py                      # 100 steps each, batch 64
    python scripts/benchmark_vs_openclip.py --steps 200 --batch-size 64 \
        --openclip-python /work/bench-venv/bin/python --out benchmark_vs_openclip.json --workdir /tmp/bench

What is measured: each trainer trains for `--steps` optimizer steps, one after the other, and
reports the wall-clock time of every step (from the end of one step to the end of the next, so
data waiting, the optimizer, clipping and logging are all included). The first 20% of the
steps are discarded as warm-up (worker start-up, shuffle-buffer filling, allocator growth);
throughput is the samples of the remaining steps divided by their summed time. Ours logs
per-step times with `callbacks.throughput.window=1`; OpenCLIP prints a per-step samples/s
with `--log-every-n-steps 1`.

Why it is fair: both read the embedded synthetic shards (8 tar shards × 1024 pairs at 64 px,
img2dataset layout) through WebDataset with one loader worker, apply the same crop
(RandomResizedCrop 64, scale 0.9-1, bicubic), train the same towers — timm
`vit_tiny_patch16_224` built at 64 px, class-token pooling, bias-free linear projection to 256;
a causal text transformer of 4 layers × 256 wide, 4 heads, MLP ratio 4, QuickGELU, 32 tokens,
projected to 256 — with the same symmetric InfoNCE, AdamW (lr 5e-4, wd 0.2, betas 0.9/0.98,
eps 1e-6, 50 warm-up steps, cosine), gradient clipping at norm 1, batch size, fp32, on the CPU,
with the same torch and timm builds. No checkpoint is written and no validation runs during
the measured steps. The differences that remain are listed in the output.

OpenCLIP 3.3.0 needs three run-time fixes here, applied by a small launcher that this script
writes into the work directory (no OpenCLIP source is copied or changed): its tar reader is
built with `eof_value=None` (webdataset 1.0 otherwise ends each shard with a marker sample it
cannot group: `KeyError: 'fname'`); its timm towers ignore `image_size`, so a ViT-Ti/16 at
64 px is registered with timm under its own name; and a model config naming that tower is
added with `open_clip.add_model_config`.
"""

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile

from benchmark import measured_steps, run_clip_train, subprocess_env

from clip_train.data.datamodule import learnt_tokenizer_folder
from clip_train.data.shards import expand_shards
from clip_train.data.tokenizer import load_tokenizer
from clip_train.data.world.synthetic import SyntheticShards

WARMUP_FRACTION = 0.2
OPENCLIP_MODEL = "bench-vit-tiny-64"
MODEL_DESCRIPTION = (
    "timm vit_tiny_patch16_224 at 64 px (class token, linear 192->256, no bias) + causal text transformer "
    "(4 layers x 256, 4 heads, MLP x4, 32 tokens, ->256); embed dim 256; the same learnt BPE tokenizer"
)
DIFFERENCES = [
    "text attention: ours is transformers' CLIPTextModel (causal mask, pooled at the end-of-text position found "
    "from the padding mask); OpenCLIP's is nn.MultiheadAttention (causal mask, pooled by its argmax rule)",
    "sample shuffle buffer: ours 2000, OpenCLIP 5000 (1000 before the first sample)",
]


def openclip_model_config(tokenizer_folder: str, vocab_size: int, image_trunk: str = "vit_tiny_patch16_64") -> dict:
    """OpenCLIP's description of our `tiny` towers, reading captions with our learnt tokenizer; `image_trunk` is one
    of the 64 px timm trunks the launcher registers (the plain ViT-Ti/16, or the `tiny` preset's hybrid)."""
    return {
        "embed_dim": 256,
        "quick_gelu": True,  # transformers' CLIPTextModel, our text tower, uses QuickGELU
        "vision_cfg": {
            "timm_model_name": image_trunk,
            "timm_model_pretrained": False,
            "timm_pool": "token",
            "timm_proj": "linear",
            "timm_proj_bias": False,
            "image_size": 64,
        },
        "text_cfg": {
            "context_length": 32,
            "vocab_size": vocab_size,
            "hf_tokenizer_name": tokenizer_folder,
            "width": 256,
            "heads": 4,
            "layers": 4,
        },
    }


OPENCLIP_LAUNCHER = '''\
"""Runs OpenCLIP's trainer with run-time fixes; written by clip_train's scripts/benchmark_vs_openclip.py.

    python openclip_launcher.py MODEL_CONFIG_DIR [open_clip_train.main arguments]
"""

import functools
import sys

import open_clip
import open_clip_train.data
import timm
from open_clip_train.main import main
from timm.models import register_model
from webdataset.tariterators import tar_file_expander

# webdataset 1.0 ends each shard with a marker sample that open_clip_train cannot group (KeyError: 'fname')
open_clip_train.data.tar_file_expander = functools.partial(tar_file_expander, eof_value=None)


@register_model
def vit_tiny_patch16_64(pretrained=False, **kwargs):
    """ViT-Ti/16 built for 64 px: OpenCLIP's timm towers do not pass image_size on to timm."""
    return timm.create_model("vit_tiny_patch16_224", pretrained=pretrained, img_size=64, **kwargs)


@register_model
def vit_tiny_r_s16_p8_64(pretrained=False, **kwargs):
    """clip_train's `tiny` image trunk: the hybrid R-Ti/16 (conv stem) at 64 px, 4x4 patches of the stem's map."""
    return timm.create_model("vit_tiny_r_s16_p8_224", pretrained=pretrained, img_size=64, patch_size=4, **kwargs)


if __name__ == "__main__":
    open_clip.add_model_config(sys.argv[1])
    main(sys.argv[2:])
'''

# "Train Epoch: 0 [ 640/6400 (10%)] Data (t): 0.011 Batch (t): 1.285, 49.8054/s, 49.8054/s/gpu LR: ..."
OPENCLIP_STEP_LINE = re.compile(r"Train Epoch: \d+ \[\s*(\d+)/\d+ .*?Batch \(t\): [\d.]+, ([\d.eE+-]+)/s,")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=100, help="steps per trainer (the first 20%% are warm-up)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating pairs of runs; the median pair is reported")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--openclip-python",
        default="/work/bench-venv/bin/python",
        help="the Python of the separate venv that has open-clip-torch (see the docstring)",
    )
    parser.add_argument("--out", default="benchmark_vs_openclip.json", help="where to write the results as JSON")
    parser.add_argument(
        "--workdir",
        default=tempfile.gettempdir(),
        help="a fresh run folder is made in here for both trainers' outputs and logs",
    )
    args = parser.parse_args()
    if args.steps < 5:
        parser.error("--steps must be at least 5 to leave steps after the warm-up")
    return args


def run_logged(command: list[str], log_path: str) -> None:
    """Runs `command`, its output going to `log_path`; on failure raises with the log's tail."""
    print(f"$ {' '.join(command)}\n  (output: {log_path})", flush=True)
    with open(log_path, "w") as log:
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=subprocess_env())
    if code != 0:
        with open(log_path, errors="replace") as log:
            tail = log.read()[-4000:]
        raise RuntimeError(f"exit code {code} from {command[:3]}...; end of {log_path}:\n{tail}")


def package_versions(python: str, modules: list[str]) -> dict[str, str]:
    code = f"import importlib.metadata as m; print(*(m.version(n) for n in {modules!r}))"
    versions = subprocess.check_output([python, "-c", code], text=True, env=subprocess_env()).split()
    return dict(zip(modules, versions, strict=True))


def synthetic_train_shards() -> tuple[str, int, str, int]:
    """The embedded training shards (written on first use, as `python -m clip_train` does), their size,
    and the tokenizer our trainer learns from them (folder, vocabulary size)."""
    shards = SyntheticShards()
    cache_dir = os.environ.get("CLIP_TRAIN_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "clip_train"))
    train_pattern, _ = shards.write(cache_dir)
    tokenizer_folder = learnt_tokenizer_folder(expand_shards(train_pattern, "train"), cache_dir, 16384, 200_000)
    return train_pattern, shards.num_train, tokenizer_folder, len(load_tokenizer(tokenizer_folder))


def run_ours(shards: str, steps: int, batch_size: int, run_dir: str) -> dict[int, float]:
    """Trains the `tiny` preset with a plain ViT-Ti/16 trunk; returns samples/s of each timed step, by 0-based step index."""
    overrides = [
        "model=tiny",
        "model.image_tower.model_name=vit_tiny_patch16_224",  # the plain ViT-Ti/16 OpenCLIP builds too
        "model.image_tower.patch_size=16",
        "data=webdataset",  # `data=synthetic` would also validate on the synthetic validation split
        f"data.train_shards={shards}",
        "data.num_workers=1",
        f"data.batch_size={batch_size}",
    ]
    timed = run_clip_train(overrides, steps, os.path.join(run_dir, "ours"))
    return {step: metrics["train/samples_per_sec"] for step, metrics in timed.items()}


def write_openclip_launcher(run_dir: str, model_config: dict) -> tuple[str, str]:
    """The launcher script and the folder holding its model config, both inside `run_dir`."""
    config_dir = os.path.join(run_dir, "openclip_model_configs")
    os.makedirs(config_dir)
    with open(os.path.join(config_dir, f"{OPENCLIP_MODEL}.json"), "w") as f:
        json.dump(model_config, f, indent=2)
    launcher = os.path.join(run_dir, "openclip_launcher.py")
    with open(launcher, "w") as f:
        f.write(OPENCLIP_LAUNCHER)
    return launcher, config_dir


def run_openclip(
    python: str, shards: str, shard_samples: int, model_config: dict, steps: int, batch_size: int, run_dir: str
) -> dict[int, float]:
    """Trains the same towers with open_clip_train; returns samples/s of each step, by 0-based step index.

    One epoch of exactly `steps` batches; the shard list is repeated (`::`) when one pass is too short.
    """
    launcher, config_dir = write_openclip_launcher(run_dir, model_config)
    passes = math.ceil(steps * batch_size / shard_samples)
    command = [
        python,
        launcher,
        config_dir,
        "--model",
        OPENCLIP_MODEL,
        "--train-data",
        "::".join([shards] * passes),
        "--dataset-type",
        "webdataset",
        "--train-num-samples",
        str(steps * batch_size),
        "--batch-size",
        str(batch_size),
        "--workers",
        "1",
        "--precision",
        "fp32",
        "--device",
        "cpu",
        "--lr",
        "5e-4",
        "--wd",
        "0.2",
        "--beta1",
        "0.9",
        "--beta2",
        "0.98",
        "--eps",
        "1e-6",
        "--warmup",
        "50",
        "--grad-clip-norm",
        "1.0",
        "--epochs",
        "1",
        "--log-every-n-steps",
        "1",
        "--report-to",
        "none",
        "--logs",
        os.path.join(run_dir, "openclip"),
        "--name",
        "run",
    ]
    log_path = os.path.join(run_dir, "openclip.log")
    run_logged(command, log_path)
    with open(log_path, errors="replace") as log:
        matches = OPENCLIP_STEP_LINE.findall(log.read())
    return {int(seen) // batch_size - 1: float(rate) for seen, rate in matches}


def steady_state(rates: dict[int, float], measured: list[int]) -> dict[str, float]:
    """Samples of the measured steps over their summed time (the harmonic mean of per-step rates)."""
    step_rates = [rates[step] for step in measured]
    return {
        "samples_per_sec": len(step_rates) / sum(1.0 / rate for rate in step_rates),
        "median_step_samples_per_sec": statistics.median(step_rates),
    }


def print_table(result: dict) -> None:
    ours, theirs = result["ours"], result["openclip"]
    print()
    print(f"{'':24}{'samples/s':>12}{'median step':>14}")
    print(f"{'ours (clip_train tiny)':24}{ours['samples_per_sec']:12.2f}{ours['median_step_samples_per_sec']:14.2f}")
    print(f"{'OpenCLIP':24}{theirs['samples_per_sec']:12.2f}{theirs['median_step_samples_per_sec']:14.2f}")
    pairs = ", ".join(f"{ratio:.3f}" for ratio in result["ratios_of_all_pairs"])
    print(f"{'ratio ours/OpenCLIP':24}{result['ratio_ours_over_openclip']:12.3f}   (median; all pairs: {pairs})")
    print(
        f"steps measured: {result['steps_measured']} of {result['steps']} (first {result['warmup_steps']} "
        f"discarded); batch {result['batch_size']}; fp32, CPU, 1 loader worker"
    )
    print(f"model: {result['model']}")
    print(f"versions: ours {ours['versions']}; OpenCLIP {theirs['versions']}")
    print("differences left:")
    for difference in result["differences"]:
        print(f"  - {difference}")


def measure_pair(args, shards: str, shard_samples: int, model_config: dict, run_dir: str) -> dict:
    """One run of each trainer, back to back; their steady-state rates over the same steps."""
    ours_rates = run_ours(shards, args.steps, args.batch_size, run_dir)
    openclip_rates = run_openclip(
        args.openclip_python, shards, shard_samples, model_config, args.steps, args.batch_size, run_dir
    )
    measured = measured_steps(args.steps, ours_rates, openclip_rates)
    if not measured:
        raise RuntimeError(f"no step was timed by both trainers after the warm-up; see the logs in {run_dir}")
    ours, openclip = steady_state(ours_rates, measured), steady_state(openclip_rates, measured)
    ratio = ours["samples_per_sec"] / openclip["samples_per_sec"]
    return {"ours": ours, "openclip": openclip, "ratio": ratio, "steps_measured": len(measured), "run_dir": run_dir}


def main() -> None:
    args = parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    shards, shard_samples, tokenizer_folder, vocab_size = synthetic_train_shards()
    model_config = openclip_model_config(tokenizer_folder, vocab_size)
    # the machine's speed drifts over minutes: alternate the trainers and report the median pair
    pairs = []
    for _ in range(args.repeats):
        run_dir = tempfile.mkdtemp(prefix="benchmark_vs_openclip-", dir=args.workdir)
        pairs.append(measure_pair(args, shards, shard_samples, model_config, run_dir))
    median = sorted(pairs, key=lambda pair: pair["ratio"])[len(pairs) // 2]
    ours_versions = package_versions(sys.executable, ["torch", "timm"])
    openclip_versions = package_versions(args.openclip_python, ["torch", "timm", "open_clip_torch"])
    result = {
        "ours": median["ours"] | {"versions": ours_versions},
        "openclip": median["openclip"] | {"versions": openclip_versions},
        "ratio_ours_over_openclip": median["ratio"],
        "ratios_of_all_pairs": [pair["ratio"] for pair in pairs],
        "steps": args.steps,
        "warmup_steps": math.ceil(args.steps * WARMUP_FRACTION),
        "steps_measured": median["steps_measured"],
        "batch_size": args.batch_size,
        "model": MODEL_DESCRIPTION,
        "shards": shards,
        "differences": DIFFERENCES,
        "run_dirs": [pair["run_dir"] for pair in pairs],
    }
    print_table(result)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nwritten to {args.out}; logs in {result['run_dirs']}")


if __name__ == "__main__":
    main()
