"""Learning side by side: our trainer and OpenCLIP's on a drawn world no default trains on, over several seeds.

    python scripts/benchmark_learning_vs_openclip.py                       # 3 seeds × {InfoNCE, SigLIP} × both trainers
    python scripts/benchmark_learning_vs_openclip.py --trainers ours --tag lr1e-3 -- optim.optimizer.lr=1e-3

The world is `clip_train.data.world.glyph_world` (patterned glyphs on a 3×3 board: 20,000 training pairs in 10
plain tars, 1,000 validation pairs), written once into `--data`. Both trainers train the same towers —
timm `vit_tiny_patch16_224` built at 64 px (class token, bias-free linear projection to 256) and a causal
text transformer of 4 layers × 256 (4 heads, QuickGELU, 32 tokens) — for `--steps` steps of `--batch-size`
(equal samples seen), fp32 on the CPU, one loader worker, with the settings both expose set alike: AdamW lr
5e-4, weight decay 0.2, betas 0.9/0.98, eps 1e-6, 50 warm-up steps then cosine, gradient clipping at 1,
and the BPE tokenizer our trainer learns from the training captions (OpenCLIP reads it as a transformers
tokenizer). Everything else is each trainer's own default: that is what is compared. The extra arguments
after `--` are overrides of our run only, to measure a candidate change (name it with `--tag`).

Each trainer scores its final model on the validation pairs with its own retrieval code (ours counts
ties at their expected rank, OpenCLIP's argsort breaks them by position; with continuous features
they agree). The figure of merit is the R@1 sum (image→text + text→image R@1); R@5 and R@10 sums are
reported too. Our seeds run as one `python -m clip_train --multirun seed=...` sweep, whose summary.json
(clip_train.multirun_summary) gives our side's values. For each loss the report gives both means, the
sample standard deviations, the ratio of means, and Welch's t-test of the difference (two-sided p).

Every finished run is kept in `--workdir` and reused by a later call with the same trainer, loss, tag and
seed, so candidates can be added one at a time; the results accumulate in `--out`.

OpenCLIP lives in its own venv (see scripts/benchmark_vs_openclip.py for how to make it).
"""

import argparse
import json
import math
import os
import statistics
import sys

from benchmark_vs_openclip import OPENCLIP_MODEL, openclip_model_config, run_logged, write_openclip_launcher

from clip_train.data.datamodule import learnt_tokenizer_folder
from clip_train.data.shards import expand_shards
from clip_train.data.tokenizer import load_tokenizer
from clip_train.data.world.glyph_world import VERSION as GLYPH_WORLD_VERSION
from clip_train.data.world.glyph_world import write_glyph_world

METRICS = ("R@1", "R@5", "R@10")
# the settings both trainers expose, set alike (OpenCLIP's flags; ours are the tiny preset's defaults)
SHARED_OPENCLIP_FLAGS = [
    "--lr", "5e-4", "--wd", "0.2", "--beta1", "0.9", "--beta2", "0.98", "--eps", "1e-6", "--warmup", "50",
    "--grad-clip-norm", "1.0", "--precision", "fp32", "--device", "cpu", "--workers", "1",
]  # fmt: skip
# our towers: `plain` is the ViT-Ti/16 that OpenCLIP trains here too (a comparison of trainers); `tiny` is our
# `model=tiny` preset as shipped, whose image tower has a convolutional stem (a comparison of default recipes)
OURS_MODELS = {
    "plain": ["model=tiny", "model.image_tower.model_name=vit_tiny_patch16_224", "model.image_tower.patch_size=16"],
    "tiny": ["model=tiny"],
}
# the same trunks, as the OpenCLIP launcher registers them
OPENCLIP_TRUNKS = {"plain": "vit_tiny_patch16_64", "tiny": "vit_tiny_r_s16_p8_64"}


def parse_args() -> tuple[argparse.Namespace, list[str]]:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--losses", default="infonce,siglip")
    parser.add_argument("--trainers", default="ours,openclip")
    parser.add_argument("--tower", default="plain", choices=sorted(OURS_MODELS), help="our image tower (OURS_MODELS)")
    parser.add_argument("--tag", default="default", help="names our run's variant (the overrides after --)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--data", default=None, help="where the world is written (default: the clip_train cache)")
    parser.add_argument("--workdir", default="/tmp/benchmark_learning")
    parser.add_argument("--openclip-python", default="/work/bench-venv/bin/python")
    parser.add_argument("--out", default="benchmark_learning_vs_openclip.json")
    return parser.parse_args(argv), extra


def glyph_world(folder: str) -> tuple[str, str, int]:
    """The world's (train, val) patterns, written on first use, and its training size."""
    marker = os.path.join(folder, "complete")
    if not os.path.exists(marker):
        print(f"writing the glyph world into {folder}", flush=True)
        write_glyph_world(folder)
        open(marker, "w").close()
    return os.path.join(folder, "train-{00000..00009}.tar"), os.path.join(folder, "val-00000.tar"), 20_000


def sums(metrics: dict[str, float], name: str) -> dict[str, float]:
    """{R@k: image→text + text→image R@k} from metrics named `name.format(direction=..., k=...)`."""
    return {
        f"R@{k}": sum(metrics[name.format(direction=d, k=k)] for d in ("image_to_text", "text_to_image")) for k in (1, 5, 10)
    }


def run_ours(args, extra: list[str], loss: str, seeds: list[int], train: str, val: str) -> dict[int, dict]:
    """One multirun over `seeds`; {seed: R@k sums} from each job's metrics.json (its summary.json alike)."""
    sweep = os.path.join(args.workdir, f"ours-{args.tower}-{args.tag}-{loss}")
    results = {}
    for seed in seeds:
        done = os.path.join(sweep, f"seed{seed}.json")
        if os.path.exists(done):
            with open(done) as f:
                results[seed] = json.load(f)
    todo = [seed for seed in seeds if seed not in results]
    if todo:
        job_dir = os.path.join(sweep, "multirun-" + "-".join(map(str, todo)))
        command = [
            sys.executable, "-m", "clip_train", "--multirun", f"seed={','.join(map(str, todo))}", *OURS_MODELS[args.tower],
            f"loss={loss}", "data=webdataset", f"data.train_shards='{train}'", f"data.val_shards='{val}'",
            "data.num_workers=1", f"data.batch_size={args.batch_size}", f"trainer.max_steps={args.steps}",
            "trainer.num_sanity_val_steps=0", "eval=none", "ckpt_path=null", "logger=csv",
            f"hydra.sweep.dir={job_dir}", *extra,
        ]  # fmt: skip
        os.makedirs(sweep, exist_ok=True)
        run_logged(command, os.path.join(sweep, f"multirun-{'-'.join(map(str, todo))}.log"))
        with open(os.path.join(job_dir, "summary.json")) as f:
            (group,) = json.load(f).values()
        for index, seed in enumerate(todo):
            per_seed = {m: group[m]["values"][index] for m in group}
            results[seed] = sums(per_seed, "val/{direction}_R@{k}")
            with open(os.path.join(sweep, f"seed{seed}.json"), "w") as f:
                json.dump(results[seed], f)
    return results


def run_openclip(args, loss: str, seeds: list[int], train: str, val: str, model_config: dict) -> dict[int, dict]:
    """OpenCLIP's trainer once per seed, one epoch of `steps` batches; {seed: R@k sums} from its results.jsonl."""
    results = {}
    for seed in seeds:
        run_dir = os.path.join(args.workdir, f"openclip-{args.tower}-{loss}", f"seed{seed}")
        done = os.path.join(run_dir, "result.json")
        if os.path.exists(done):
            with open(done) as f:
                results[seed] = json.load(f)
            continue
        os.makedirs(run_dir, exist_ok=True)
        launcher, config_dir = write_openclip_launcher(run_dir, model_config)
        command = [
            args.openclip_python, launcher, config_dir, "--model", OPENCLIP_MODEL, "--train-data", train,
            "--dataset-type", "webdataset", "--train-num-samples", str(args.steps * args.batch_size),
            "--val-data", val, "--val-num-samples", "1000", "--batch-size", str(args.batch_size), "--epochs", "1",
            "--seed", str(seed), *SHARED_OPENCLIP_FLAGS, *(["--siglip"] if loss == "siglip" else []),
            "--report-to", "none", "--logs", os.path.join(run_dir, "logs"), "--name", "run", "--save-frequency", "0",
        ]  # fmt: skip
        run_logged(command, os.path.join(run_dir, "openclip.log"))
        with open(os.path.join(run_dir, "logs", "run", "checkpoints", "results.jsonl")) as f:
            final = json.loads(f.read().splitlines()[-1])
        results[seed] = sums(final, "{direction}_R@{k}")
        with open(done, "w") as f:
            json.dump(results[seed], f)
    return results


def welch(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Welch's t statistic of mean(a) − mean(b), its degrees of freedom, and the two-sided p-value."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return math.inf if statistics.fmean(a) != statistics.fmean(b) else 0.0, math.nan, 0.0
    t = (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return t, df, 2 * student_t_tail(abs(t), df)


def student_t_tail(t: float, df: float, steps: int = 20_000) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom: 1/2 minus the density's integral over [0, t]
    (Simpson's rule; exact to ~1e-9 here, which is all a seed comparison needs)."""
    norm = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    h = t / steps
    total = sum(
        (1 if i in (0, steps) else 4 if i % 2 else 2) * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2) for i in range(steps + 1)
    )
    return max(0.0, 0.5 - norm * total * h / 3)


def compare(ours: dict[int, dict], theirs: dict[int, dict]) -> dict:
    row = {}
    for metric in METRICS:
        a, b = [r[metric] for r in ours.values()], [r[metric] for r in theirs.values()]
        entry = {
            "ours": {"mean": statistics.fmean(a), "std": statistics.stdev(a) if len(a) > 1 else None, "values": a},
            "openclip": {"mean": statistics.fmean(b), "std": statistics.stdev(b) if len(b) > 1 else None, "values": b},
            "ratio": statistics.fmean(a) / statistics.fmean(b),
        }
        if len(a) > 1 and len(b) > 1:
            entry["welch_t"], entry["welch_df"], entry["p_two_sided"] = welch(a, b)
        row[metric] = entry
    return row


def print_report(report: dict) -> None:
    for key, row in report.items():
        print(f"\n{key}")
        for metric, e in row.items():
            o, t = e["ours"], e["openclip"]
            sig = f"  t={e['welch_t']:.2f} p={e['p_two_sided']:.3f}" if "p_two_sided" in e else ""
            print(
                f"  {metric} sum: ours {o['mean']:.3f} ± {o['std'] or 0:.3f} {[round(v, 3) for v in o['values']]}"
                f" | OpenCLIP {t['mean']:.3f} ± {t['std'] or 0:.3f} {[round(v, 3) for v in t['values']]}"
                f" | ratio {e['ratio']:.3f}{sig}"
            )


def main() -> None:
    args, extra = parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    cache = os.environ.get("CLIP_TRAIN_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "clip_train"))
    train, val, _ = glyph_world(args.data or os.path.join(cache, f"glyph-world-v{GLYPH_WORLD_VERSION}"))
    tokenizer = learnt_tokenizer_folder(expand_shards(train, "train"), cache, 16384, 200_000)
    model_config = openclip_model_config(tokenizer, len(load_tokenizer(tokenizer)), OPENCLIP_TRUNKS[args.tower])
    results = {}
    if os.path.exists(args.out):
        with open(args.out) as f:
            results = json.load(f).get("runs", {})
    for loss in args.losses.split(","):
        if "ours" in args.trainers:
            results[f"ours/{args.tower}-{args.tag}/{loss}"] = run_ours(args, extra, loss, seeds, train, val)
        if "openclip" in args.trainers:
            results[f"openclip/{args.tower}/{loss}"] = run_openclip(args, loss, seeds, train, val, model_config)
    results = {key: {int(seed): value for seed, value in runs.items()} for key, runs in results.items()}
    report = {}  # ours against OpenCLIP on the same tower, and against OpenCLIP's plain ViT (the peer's usual tower)
    for key, runs in results.items():
        trainer, variant, loss = key.split("/")
        for peer_tower in dict.fromkeys([variant.split("-")[0], "plain"]):
            peer = results.get(f"openclip/{peer_tower}/{loss}")
            if trainer == "ours" and peer:
                report[f"ours {variant} vs OpenCLIP {peer_tower}, {loss}"] = compare(runs, peer)
    print_report(report)
    with open(args.out, "w") as f:
        json.dump({"steps": args.steps, "batch_size": args.batch_size, "runs": results, "report": report}, f, indent=2)
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
