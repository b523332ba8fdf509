"""Which image tower makes the better VLM: the same `python -m clip_train.vlm` stage over several towers, one table.

    python scripts/vlm_encoder_table.py --runs logs/encoders --seeds 0 1 2

Towers (rows), each the last checkpoint of a CLIP run in `<runs>/<tower>/`, trained here by `python -m clip_train`
when it is not there yet (pass `--tower NAME=CKPT` to use a checkpoint of yours instead):

    random       trainer.max_steps=1 optim.optimizer.lr=0.0: one optimizer step at lr 0, i.e. the initialisation
    default      the default run (`python -m clip_train`)
    coca         model=coca_tiny loss=coca: the default recipe with CoCa's captioning decoder and loss
    coca_shapes  experiment=coca_shapes: a CoCa trained 3000 steps to name shapes

Every tower gets `python -m clip_train.vlm vision.checkpoint=CKPT seed=S` for each seed (its run in
`<runs>/vlm_<tower>_seed<S>/`; a run whose metrics.json exists is not run again), with `--vlm` overrides added.
The blind baseline (the same LM on the same questions without the image) does not depend on the tower, so only the
first tower's runs train it; it is the table's last row. Columns: the question types and their mean, as
mean ± sample standard deviation over the seeds when there are several. Everything runs offline.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

from clip_train.vlm.questions import QUESTION_TYPES

TOWERS = {
    "random": ["trainer.max_steps=1", "optim.optimizer.lr=0.0"],
    "default": [],
    "coca": ["model=coca_tiny", "loss=coca"],
    "coca_shapes": ["experiment=coca_shapes"],
}


def run(command: list[str]) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def tower_checkpoint(runs: str, name: str, given: dict[str, str]) -> str:
    """The checkpoint of tower `name`: given, or `<runs>/<name>/checkpoints/last.ckpt`, trained when absent."""
    if name in given:
        return given[name]
    checkpoint = os.path.join(runs, name, "checkpoints", "last.ckpt")
    if not os.path.isfile(checkpoint):
        if name not in TOWERS:
            raise SystemExit(f"--tower {name}: no checkpoint given and no recipe to train one ({sorted(TOWERS)})")
        run([sys.executable, "-m", "clip_train", f"paths.output_dir={os.path.join(runs, name)}", *TOWERS[name]])
    return checkpoint


def vlm_metrics(runs: str, name: str, checkpoint: str, seed: int, blind: bool, extra: list[str]) -> dict[str, float]:
    folder = os.path.join(runs, f"vlm_{name}_seed{seed}")
    path = os.path.join(folder, "metrics.json")
    if not os.path.isfile(path):
        run([sys.executable, "-m", "clip_train.vlm", f"vision.checkpoint={checkpoint}", f"seed={seed}",
             f"paths.output_dir={folder}", f"blind_baseline={str(blind).lower()}", *extra])  # fmt: skip
    with open(path) as f:
        return json.load(f)


def cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(rows: dict[str, list[dict[str, float]]], prefixes: dict[str, str]) -> str:
    """Markdown: one row per tower (`prefixes[name]` picks its keys: "" or "blind/"), one column per question type."""
    first = next(iter(rows.values()))[0]
    kinds = [kind for kind in QUESTION_TYPES if f"vqa/{kind}" in first]  # the order of clip_train/vlm/questions.py
    lines = ["| tower | " + " | ".join(kinds) + " | mean |", "| --- " * (len(kinds) + 2) + "|"]
    for name, runs in rows.items():
        prefix = prefixes[name]
        values = [cell([m[f"{prefix}vqa/{kind}"] for m in runs]) for kind in [*kinds, "mean"]]
        lines.append(f"| {name} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, help="folder of the CLIP and VLM runs (reused when there)")
    parser.add_argument("--towers", nargs="+", default=list(TOWERS), help=f"rows, from {list(TOWERS)}")
    parser.add_argument("--tower", action="append", default=[], metavar="NAME=CKPT", help="a tower's own checkpoint")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--vlm", nargs="*", default=[], help="overrides for every python -m clip_train.vlm run")
    args = parser.parse_args()
    given = dict(pair.split("=", 1) for pair in args.tower)
    names = list(dict.fromkeys([*args.towers, *given]))
    rows, prefixes = {}, {}
    for position, name in enumerate(names):
        checkpoint = tower_checkpoint(args.runs, name, given)
        rows[name] = [vlm_metrics(args.runs, name, checkpoint, s, position == 0, args.vlm) for s in args.seeds]
        prefixes[name] = ""
    rows["blind (no image)"], prefixes["blind (no image)"] = rows[names[0]], "blind/"
    print(table(rows, prefixes))


if __name__ == "__main__":
    main()
