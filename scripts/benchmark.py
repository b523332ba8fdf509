"""Steady-state training speed of any clip_train configuration, and its model FLOPs utilisation.

    python scripts/benchmark.py                                    # tiny preset, batch 64, fp32, this machine
    python scripts/benchmark.py --steps 100 model=vit_b16 data.batch_size=256 trainer=gpu   # on a GPU box
    python scripts/benchmark.py --synthetic-data --steps 100 model=vit_b16 data.batch_size=256 trainer=gpu
    python scripts/benchmark.py --flops-only model=vit_b16         # FLOPs per sample, and the H100 target

It trains `--steps` steps through `python -m clip_train <overrides>` (validation and checkpoints
off, every step timed by the throughput callback, `clip_train.training.callbacks.ThroughputMonitor`) and
reports, over the steps after the first 20%: samples/s, step time, the share of step time spent
waiting for data, and MFU: the model's training FLOPs per sample (`clip_train.training.flops`) times
samples/s, over the device's peak (`clip_train.training.peak_flops`: the vendor's dense bf16 figure on a
GPU, the measured fp32 matmul rate on a CPU), as the run itself logs it (`train/mfu`).

--synthetic-data takes the loader out (`clip_train.data.fixed_device_batch`): one random uint8 batch
and random token ids, made on the device once and fed at every step, so the numbers are the
training step's alone; the difference from a run with the loader is what the data costs.
"""

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile

WARMUP_FRACTION = 0.2
H100_BF16_DENSE_PEAK = 989e12  # FLOP/s, NVIDIA's datasheet (SXM): the target's reference
FIXED_DEVICE_BATCH = "data._target_=clip_train.data.fixed_device_batch.FixedDeviceBatches"
STEP_METRICS = ("train/samples_per_sec", "train/data_wait", "train/mfu")


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}


def run_clip_train(overrides: list[str], steps: int, run_dir: str) -> dict[int, dict[str, float]]:
    """Train `steps` steps; returns {step index: {metric: value}} for every timed step (`STEP_METRICS`
    that the run logged: `train/mfu` is missing where the device's peak is unknown)."""
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
    return {int(row["step"]): {name: float(row[name]) for name in STEP_METRICS if row.get(name)} for row in rows}


def measured_steps(steps: int, *runs: dict) -> list[int]:
    """Steps after the warm-up that every run timed."""
    first = math.ceil(steps * WARMUP_FRACTION)
    return sorted(step for step in set.intersection(*(set(run) for run in runs)) if step >= first)


def steady_state(rates: dict[int, float], measured: list[int]) -> float:
    """Samples of the measured steps over their summed time (the harmonic mean of per-step rates)."""
    return len(measured) / sum(1.0 / rates[step] for step in measured)


def model_flops_per_sample(overrides: list[str]) -> float:
    """Training FLOPs per sample of the model the overrides configure (`clip_train.training.flops`)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from clip_train.paths import CONFIG_DIR
    from clip_train.training.flops import training_flops_per_sample

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[o for o in overrides if o.startswith("model")])
    return training_flops_per_sample(instantiate(cfg.model, text_tower={"vocab_size": 49408}))


def summary(steps: dict[int, dict[str, float]], measured: list[int], batch: int) -> dict:
    """Steady-state numbers over the measured steps; MFU scales with samples/s, so it is the logged
    MFU per sample/s (FLOPs over peak, the same every step) times the steady rate."""
    samples_per_sec = steady_state({step: steps[step]["train/samples_per_sec"] for step in measured}, measured)
    result = {
        "samples_per_sec": samples_per_sec,
        "step_time_s": batch / samples_per_sec,
        "data_wait_share": sum(steps[step]["train/data_wait"] for step in measured) / len(measured),
        "steps_measured": len(measured),
    }
    last = steps[measured[-1]]
    if "train/mfu" in last:
        result["mfu"] = last["train/mfu"] / last["train/samples_per_sec"] * samples_per_sec
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", default="benchmark.json")
    parser.add_argument("--workdir", default=tempfile.gettempdir())
    parser.add_argument("--flops-only", action="store_true", help="count FLOPs; do not train")
    parser.add_argument("--synthetic-data", action="store_true",
                        help="no loader: one random batch made on the device, fed at every step")  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="clip_train overrides, e.g. model=vit_b16 data.batch_size=256")
    args = parser.parse_args()
    overrides = args.overrides or ["model=tiny", "data.batch_size=64"]
    flops = model_flops_per_sample(overrides)
    result = {"overrides": overrides, "synthetic_data": args.synthetic_data, "training_gflops_per_sample": flops / 1e9}
    result["h100_bf16_samples_per_sec_at_50pct_mfu"] = 0.5 * H100_BF16_DENSE_PEAK / flops
    if not args.flops_only:
        run_dir = tempfile.mkdtemp(prefix="benchmark-", dir=args.workdir)
        run_overrides = [*overrides, FIXED_DEVICE_BATCH] if args.synthetic_data else overrides
        steps = run_clip_train(run_overrides, args.steps, run_dir)
        batch = next((int(o.split("=")[1]) for o in overrides if o.startswith("data.batch_size=")), 64)
        result |= summary(steps, measured_steps(args.steps, steps), batch) | {"run_dir": run_dir}
    for key, value in result.items():
        print(f"{key:42} {value:.4g}" if isinstance(value, float) else f"{key:42} {value}")
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
