"""Steady-state training speed of any clip_train configuration, and its model FLOPs utilisation.

    python scripts/benchmark.py                                    # tiny preset, batch 64, fp32, this machine
    python scripts/benchmark.py --steps 100 model=vit_b16 data.batch_size=256 trainer=gpu   # on a GPU box
    python scripts/benchmark.py --flops-only model=vit_b16         # FLOPs per sample, and the H100 target

It trains `--steps` steps through `python -m clip_train <overrides>` (validation and checkpoints
off, every step timed by the throughput callback) and reports, over the steps after the first
20%: samples/s, step time and the share of step time spent waiting for data. MFU is the
model's training FLOPs (forward + backward of both towers and the loss, counted once with
torch's FlopCounterMode on a small CPU batch) times samples/s, over the device's peak: from
the vendor's dense bf16/fp32 figure on a GPU, or measured here with a large fp32 matmul on
the CPU (the machine's raw limit).
"""

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import torch

WARMUP_FRACTION = 0.2
# dense (no sparsity) peak FLOP/s by device-name fragment, for bf16 and fp32 (TF32 where it applies)
GPU_PEAKS = {
    "H100": {"bf16": 989e12, "fp32": 494e12},
    "A100": {"bf16": 312e12, "fp32": 156e12},
    "L40S": {"bf16": 362e12, "fp32": 183e12},
    "A10": {"bf16": 125e12, "fp32": 62.5e12},
}
H100_BF16_PEAK = GPU_PEAKS["H100"]["bf16"]


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}


def run_clip_train(overrides: list[str], steps: int, run_dir: str) -> dict[int, tuple[float, float]]:
    """Train `steps` steps; returns {step index: (samples/s, data-wait share)} for every timed step."""
    command = [
        sys.executable, "-m", "clip_train", f"hydra.run.dir={run_dir}", *overrides,
        f"trainer.max_steps={steps}",
        "trainer.log_every_n_steps=1",
        "trainer.num_sanity_val_steps=0",
        "trainer.limit_val_batches=0",
        "logger=csv",
        "callbacks.throughput.window=1",  # every step's own time
        f"callbacks.model_checkpoint.every_n_train_steps={steps + 1}",  # no checkpoint inside the timed steps
        "ckpt_path=null",
    ]  # fmt: skip
    log_path = os.path.join(run_dir, "train.log")
    os.makedirs(run_dir, exist_ok=True)
    print(f"$ {' '.join(command)}\n  (output: {log_path})", flush=True)
    with open(log_path, "w") as log:
        if subprocess.call(command, stdout=log, stderr=subprocess.STDOUT, env=subprocess_env()):
            with open(log_path, errors="replace") as failed:
                raise RuntimeError(f"clip_train failed; end of {log_path}:\n{failed.read()[-4000:]}")
    with open(os.path.join(run_dir, "csv", "metrics.csv"), newline="") as f:
        rows = [row for row in csv.DictReader(f) if row.get("train/samples_per_sec")]
    return {int(row["step"]): (float(row["train/samples_per_sec"]), float(row["train/data_wait"])) for row in rows}


def measured_steps(steps: int, *runs: dict) -> list[int]:
    """Steps after the warm-up that every run timed."""
    first = math.ceil(steps * WARMUP_FRACTION)
    return sorted(step for step in set.intersection(*(set(run) for run in runs)) if step >= first)


def steady_state(rates: dict[int, float], measured: list[int]) -> float:
    """Samples of the measured steps over their summed time (the harmonic mean of per-step rates)."""
    return len(measured) / sum(1.0 / rates[step] for step in measured)


def training_flops_per_sample(overrides: list[str], batch: int = 2) -> float:
    """FLOPs of one forward + backward of the configured model and loss, per sample (a small CPU batch)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from torch.utils.flop_counter import FlopCounterMode

    from clip_train.loss import ContrastiveLoss
    from clip_train.paths import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[o for o in overrides if o.startswith("model")])
    model = instantiate(cfg.model, text_tower={"vocab_size": 49408})
    size, length = cfg.model.image_size, cfg.model.context_length
    batch_tensors = {
        "image": torch.randn(batch, 3, size, size),
        "input_ids": torch.zeros(batch, length, dtype=torch.long),
        "attention_mask": torch.ones(batch, length, dtype=torch.long),
    }
    counter = FlopCounterMode(display=False)
    with counter:
        image, text = model(batch_tensors)
        ContrastiveLoss()(image, text, model.logit_scale).backward()
    return counter.get_total_flops() / batch


def cpu_peak_flops(size: int = 2048, repeats: int = 10) -> float:
    """The machine's measured fp32 matmul rate, with all of torch's threads."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def device_peak(precision: str) -> tuple[float, str]:
    kind = "bf16" if "bf16" in precision or "16" in precision else "fp32"
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for fragment, peaks in GPU_PEAKS.items():
            if fragment in name:
                return peaks[kind], f"{name} {kind} dense peak (vendor figure)"
        raise SystemExit(f"no peak FLOP/s known for {name}; add it to GPU_PEAKS")
    return cpu_peak_flops(), "CPU fp32 matmul rate measured now"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", default="benchmark.json")
    parser.add_argument("--workdir", default=tempfile.gettempdir())
    parser.add_argument("--flops-only", action="store_true", help="count FLOPs; do not train")
    parser.add_argument("overrides", nargs="*", help="clip_train overrides, e.g. model=vit_b16 data.batch_size=256")
    args = parser.parse_args()
    overrides = args.overrides or ["model=tiny", "data.batch_size=64"]
    flops = training_flops_per_sample(overrides)
    result = {"overrides": overrides, "training_gflops_per_sample": flops / 1e9}
    result["h100_bf16_samples_per_sec_at_50pct_mfu"] = 0.5 * H100_BF16_PEAK / flops
    if not args.flops_only:
        run_dir = tempfile.mkdtemp(prefix="benchmark-", dir=args.workdir)
        steps = run_clip_train(overrides, args.steps, run_dir)
        measured = measured_steps(args.steps, steps)
        samples_per_sec = steady_state({s: rate for s, (rate, _) in steps.items()}, measured)
        batch = next((int(o.split("=")[1]) for o in overrides if o.startswith("data.batch_size=")), 64)
        precision = next((o.split("=")[1] for o in overrides if o.startswith("trainer.precision=")), "32-true")
        peak, peak_source = device_peak(precision)
        result |= {
            "samples_per_sec": samples_per_sec,
            "step_time_s": batch / samples_per_sec,
            "data_wait_share": sum(steps[s][1] for s in measured) / len(measured),
            "steps_measured": len(measured),
            "peak_flops_per_sec": peak,
            "peak_source": peak_source,
            "mfu": flops * samples_per_sec / peak,
            "run_dir": run_dir,
        }
    for key, value in result.items():
        print(f"{key:42} {value:.4g}" if isinstance(value, float) else f"{key:42} {value}")
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
