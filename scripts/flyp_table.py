"""FLYP against a linear probe on the 48-class drawn set `looks`: zero-shot before and after, over seeds.

    python -m clip_train paths.output_dir=runs/base                  # the base: the default run on the scenes
    python scripts/flyp_table.py runs/base/checkpoints/last.ckpt runs/flyp --seeds 0 1 2

Writes `looks` (48 classes: size × colour × background, 25 training and 20 test images each) into OUT, exports
the base model there, then runs, each as the command it prints:

    zero-shot before   python -m clip_train.evaluate on the test split (the base model, no training)
    linear probe       python -m clip_train.evaluate with eval.tasks.linear_probe (cross-entropy on frozen image
                       features, its L2 strength chosen on a seeded fifth of the training split), one per seed
    FLYP               python -m clip_train experiment=flyp from the export, one per seed, scored zero-shot on
                       the test split at its end

and prints the table (mean ± standard deviation over the seeds) as docs/fine-tuning/flyp.md shows it, also
written to OUT/table.md. A step whose run folder already holds its metrics.json is not run again, so an
interrupted measurement, or one with more seeds, reuses what is done.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

from clip_train.eval.synthetic_sets import write_class_splits


def _run(command: list[str]) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def _metrics(folder: str) -> dict:
    with open(os.path.join(folder, "metrics.json")) as f:
        return json.load(f)


def _cell(values: list[float]) -> str:
    spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.3f}{spread}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", help="the base model: a clip_train checkpoint")
    parser.add_argument("out", help="a folder for the set, the runs and the table")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=150, help="FLYP's optimizer steps")
    parser.add_argument("--lr", type=float, default=1e-4, help="FLYP's learning rate")
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    looks = write_class_splits("looks", os.path.join(out, "looks"), train_per_class=25, test_per_class=20)
    export = os.path.join(out, "base_export")
    if not os.path.isdir(export):
        _run([sys.executable, "-m", "clip_train.export", f"checkpoint={args.base}", f"out={export}"])
    test = os.path.join(looks, "test")

    def evaluate(name: str, *overrides: str) -> dict:
        folder = os.path.join(out, name)
        if not os.path.isfile(os.path.join(folder, "metrics.json")):
            evaluation = [sys.executable, "-m", "clip_train.evaluate", f"hydra.run.dir={folder}", "eval=none"]
            _run([*evaluation, "eval.progress=false", *overrides])
        return _metrics(folder)

    before = evaluate("zeroshot_before", f"checkpoint={export}", f"+eval.zeroshot.looks={test}")["zeroshot/looks/top1"]
    probe, flyp = [], []
    for seed in args.seeds:
        probe_task = ["+eval/task@eval.tasks.linear_probe=linear_probe", f"eval.tasks.linear_probe.root={looks}"]
        probe.append(
            evaluate(f"probe_seed{seed}", f"checkpoint={export}", *probe_task, f"eval.tasks.linear_probe.seed={seed}")[
                "linear_probe/top1"
            ]
        )
        run = os.path.join(out, f"flyp_seed{seed}")
        if os.path.isfile(os.path.join(run, "metrics.json")):
            flyp.append(_metrics(run)["zeroshot/classes/top1"])
            continue
        _run([
            sys.executable, "-m", "clip_train", "experiment=flyp", f"model.init_from={export}",
            f"data.train={looks}/train", f"data.val={test}", f"seed={seed}", f"hydra.run.dir={run}",
            f"trainer.max_steps={args.steps}", f"trainer.val_check_interval={args.steps}", "data.batch_size=64",
            f"optim.optimizer.lr={args.lr}", "optim.scheduler.warmup_steps=15", "data.num_workers=1", "ckpt_path=null",
        ])  # fmt: skip
        flyp.append(_metrics(run)["zeroshot/classes/top1"])
    seeds = " ".join(map(str, args.seeds))
    rows = [
        "| method (48 classes, chance 0.021) | test top-1 | per seed |",
        "|---|---|---|",
        f"| zero-shot, base model | {before:.3f} | (no training) |",
        f"| linear probe on frozen features (cross-entropy) | {_cell(probe)} | {' '.join(f'{v:.3f}' for v in probe)} |",
        f"| FLYP, then zero-shot | {_cell(flyp)} | {' '.join(f'{v:.3f}' for v in flyp)} |",
        f"\nseeds {seeds}; FLYP {args.steps} steps of 64 at lr {args.lr}",
    ]
    table = "\n".join(rows)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
