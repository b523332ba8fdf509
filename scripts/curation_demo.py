"""Does CLIP-score curation help? Measured on the embedded drawn world (issue 25, item 5).

    python scripts/curation_demo.py --out /tmp/curation_demo --seeds 0 1

1. Write a noisy training set of drawn scenes in which `--noise` of the captions (40%) belong to another image of the
   set (the captions of a random 40% of the pairs, rotated among them), and a clean validation set.
2. Train `model=test` on the noisy set; score the noisy set with it and keep the top `--keep` (60%) by CLIP score
   (`python -m clip_train.curate`); report the precision and recall of the clean pairs among the kept.
3. For each seed, train on the kept set and on the noisy set for the same steps and batch size (equal samples seen),
   and score image-text retrieval R@1 on the clean validation set (`clip_train.evaluate`'s retrieval task).
Prints the table (Markdown) and writes it, with every number, to OUT/results.md and OUT/results.json.
"""

import argparse
import glob
import json
import os
import random
import statistics
import tarfile

from hydra import compose, initialize_config_dir

from clip_train.data.shard_writer import Sample, write_shards
from clip_train.data.world.scenes import make_pair
from clip_train.paths import CONFIG_DIR

IMAGE_SIZE = 32  # model=test's


def write_sets(out: str, train: int, val: int, noise: float, seed: int = 0) -> tuple[str, str, int]:
    """Noisy training shards (each sample's JSON: {"clean": its caption is its own}) and clean validation shards;
    returns their brace patterns and the clean pairs of the training set (a rotated caption may word its new image
    too, so counted, not assumed)."""
    pairs = [make_pair(seed, i, IMAGE_SIZE)[:2] for i in range(train + val)]
    swapped = sorted(random.Random(seed).sample(range(train), round(noise * train)))
    captions = [caption for _, caption in pairs]
    for position, index in enumerate(swapped):  # each swapped pair takes the next swapped pair's caption
        captions[index] = pairs[swapped[(position + 1) % len(swapped)]][1]
    samples = [Sample(f"{i:09d}", pairs[i][0], captions[i], {"clean": captions[i] == pairs[i][1]}, "png") for i in range(train)]
    write_shards(os.path.join(out, "noisy"), "train", samples, samples_per_shard=1024)
    clean = [Sample(f"{i:09d}", pairs[i][0], pairs[i][1], {}, "png") for i in range(train, train + val)]
    write_shards(os.path.join(out, "val"), "val", clean, samples_per_shard=1024)
    clean_total = sum(sample.metadata["clean"] for sample in samples)
    return _pattern(os.path.join(out, "noisy"), "train"), _pattern(os.path.join(out, "val"), "val"), clean_total


def _pattern(folder: str, prefix: str) -> str:
    shards = len(glob.glob(os.path.join(folder, f"{prefix}-*.tar")))
    return os.path.join(folder, f"{prefix}-{{00000..{shards - 1:05d}}}.tar")


def train(run_dir: str, train_pattern: str, val_pattern: str, steps: int, batch: int, seed: int, cache: str) -> str:
    """Train model=test from scratch; returns its last checkpoint."""
    from clip_train.train import run

    overrides = [f"paths.output_dir={run_dir}", f"paths.cache_dir={cache}", "data=webdataset", f"data.train='{train_pattern}'",
                 f"data.val='{val_pattern}'", f"data.batch_size={batch}", "data.num_workers=1", "model=test",
                 f"trainer.max_steps={steps}", "logger=csv", f"seed={seed}", "trainer.enable_progress_bar=false"]  # fmt: skip
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        run(compose("train", overrides=overrides))
    return os.path.join(run_dir, "checkpoints", "last.ckpt")


def retrieval_r1(checkpoint: str, val_pattern: str, run_dir: str, cache: str) -> dict:
    """Image-to-text and text-to-image R@1 of `checkpoint` on the validation shards."""
    from clip_train.evaluate import run

    os.makedirs(run_dir, exist_ok=True)
    overrides = [f"checkpoint={checkpoint}", "eval=none", f"eval.tasks.retrieval.shards='{val_pattern}'", "eval.num_workers=0",
                 "eval.progress=false", f"paths.output_dir={run_dir}", f"paths.cache_dir={cache}"]  # fmt: skip
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        metrics = run(compose("evaluate", overrides=overrides))
    return {
        "image_to_text_R@1": metrics["retrieval/image_to_text_R@1"],
        "text_to_image_R@1": metrics["retrieval/text_to_image_R@1"],
    }


def curate(checkpoint: str, train_pattern: str, out: str, keep: float, run_dir: str) -> dict:
    """Keep the top `keep` of the noisy set by the checkpoint's CLIP score; returns precision and recall of clean pairs."""
    from clip_train.curate import run

    overrides = [f"checkpoint={checkpoint}", f"data.train='{train_pattern}'", f"out={out}", f"curate.keep_fraction={keep}",
                 f"paths.output_dir={run_dir}"]  # fmt: skip
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        report = run(compose("curate", overrides=overrides))
    kept_clean = kept = 0
    for path in glob.glob(os.path.join(out, "curated-*.tar")):
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    kept += 1
                    kept_clean += json.loads(tar.extractfile(member).read())["clean"]
    return {"kept": kept, "kept_clean": kept_clean, "written": report["counts"]["written"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--train", type=int, default=4096)
    parser.add_argument("--val", type=int, default=512)
    parser.add_argument("--noise", type=float, default=0.4)
    parser.add_argument("--keep", type=float, default=0.6)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    cache = os.path.join(args.out, "cache")
    noisy, val, clean_total = write_sets(args.out, args.train, args.val, args.noise)
    scorer = train(
        os.path.join(args.out, "runs", f"noisy-seed{args.seeds[0]}"), noisy, val, args.steps, args.batch, args.seeds[0], cache
    )
    kept = curate(scorer, noisy, os.path.join(args.out, "curated"), args.keep, os.path.join(args.out, "runs", "curate"))
    precision, recall = kept["kept_clean"] / kept["kept"], kept["kept_clean"] / clean_total
    curated = _pattern(os.path.join(args.out, "curated"), "curated")
    results = {"noisy": [], "curated": []}
    for seed in args.seeds:
        for name, pattern in (("noisy", noisy), ("curated", curated)):
            run_dir = os.path.join(args.out, "runs", f"{name}-seed{seed}")
            checkpoint = (
                scorer
                if (name, seed) == ("noisy", args.seeds[0])
                else train(run_dir, pattern, val, args.steps, args.batch, seed, cache)
            )
            results[name].append(retrieval_r1(checkpoint, val, run_dir + "-eval", cache))
    lines = [
        f"{args.train} drawn pairs, {args.noise:.0%} with another pair's caption; scored by model=test trained "
        f"{args.steps} steps × {args.batch} on them; top {args.keep:.0%} kept: {kept['kept']} pairs, precision of clean "
        f"pairs {precision:.3f} (noisy set: {clean_total / args.train:.3f}), recall {recall:.3f}.",
        "",
        "| training set | pairs | samples seen | image→text R@1 | text→image R@1 | seeds |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, size in (("noisy", args.train), ("curated (top 60%)" if args.keep == 0.6 else "curated", kept["kept"])):
        runs = results["noisy" if name == "noisy" else "curated"]
        cells = []
        for metric in ("image_to_text_R@1", "text_to_image_R@1"):
            values = [r[metric] for r in runs]
            spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.3f}{spread}")
        lines.append(
            f"| {name} | {size} | {args.steps * args.batch} | {cells[0]} | {cells[1]} | {' '.join(map(str, args.seeds))} |"
        )
    table = "\n".join(lines)
    print(table)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(
            {"args": vars(args), "clean_total": clean_total, "precision": precision, "recall": recall, **kept, "runs": results},
            f,
            indent=2,
        )


if __name__ == "__main__":
    main()
