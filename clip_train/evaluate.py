"""Evaluate checkpoints or exported models on the tasks of `eval.tasks`, `eval.zeroshot` and a benchmark suite.

    python -m clip_train.evaluate checkpoint=logs/train/runs/RUN/checkpoints/last.ckpt
    python -m clip_train.evaluate checkpoint=CKPT eval.zeroshot.imagenet=/data/imagenet/val
    python -m clip_train.evaluate checkpoint=[A.ckpt,B.ckpt] benchmark=datacomp benchmark.root=/data/datacomp_eval
    python -m clip_train.evaluate checkpoint=exported/ eval=none \
        +eval/task@eval.tasks.zeroshot.pets=zeroshot eval.tasks.zeroshot.pets.root=/data/pets/test \
        eval.tasks.retrieval.shards='/data/coco_val/{00000..00004}.tar' eval.tasks.retrieval.multi_caption=true
    torchrun --nproc-per-node 8 -m clip_train.evaluate checkpoint=... accelerator=gpu devices=8

`eval.zeroshot.NAME=ROOT` adds an ImageFolder zero-shot set (`clip_train.eval.zeroshot_sets`; ImageNet's
layouts get OpenAI's names and prompts); `benchmark=all|datacomp|imagenet_dist|retrieval|compositional benchmark.root=DIR`
adds the sets of a suite in CLIP_benchmark's webdataset layout (`clip_train.eval.benchmark_suites`);
`+eval/task@eval.tasks.<path>=<node>` adds any task from `configs/eval/task/` under that path, and
`eval.tasks.<path>.<key>=...` sets its keys; a key no task accepts stops the run before any model is
loaded, naming it. Once a set of the user's is named (a zero-shot root or a suite), the tasks on the
drawn demo scenes are dropped, as training on a user's data drops them.

Prints the metrics as JSON on stdout and writes `metrics.json` ({checkpoint: metrics} for several) and
the table `results.md`, `results.csv`, `results.png` (`clip_train.eval.results_table`) into the run
directory. Metrics are named by their task's path (`clip_train.eval.tasks`): with the default
`eval=synthetic`, `zeroshot/<set>/top1|top5|mean_per_class_recall` and `zeroshot/<set>/per_class`
({class name: top-1}) for the drawn sets `shapes` and `colours`, `compositional/<kind>` and
`compositional/mean` (true caption against a hard negative per image; chance 0.5), and
`retrieval/image_to_text_R@k`, `retrieval/text_to_image_R@k` (ties at their expected value),
`retrieval/{image_to_text,text_to_image}_{mean,median}_rank`, `retrieval/alignment_gap` (and
`retrieval/loss` for one caption per image); a suite adds `benchmark/<set>/...`, `<suite>/<task>` and
`<suite>/average`. With several processes every rank evaluates its share of each set (Lightning Fabric
sets up the process group) and counts are summed.
"""

import json
import logging
import os
import sys
from collections.abc import Iterator

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig

from clip_train import compose_only
from clip_train.cli import quote_shard_ranges, refuse_repeated_keys
from clip_train.config import check_keys
from clip_train.eval.results_table import column_labels
from clip_train.override_check import refuse_unknown_keys
from clip_train.paths import CONFIG_DIR
from clip_train.training.console_logging import print_each_line_once

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    """Run every task of `cfg.eval.tasks` and of the benchmark suite `cfg.benchmark` on `cfg.checkpoint` (a path or a
    list); returns the metrics, {checkpoint: metrics} for a list (also written to metrics.json, with the table)."""
    from clip_train.eval.drawn_tasks import drop_drawn_tasks
    from clip_train.eval.results_table import write_results_table
    from clip_train.eval.tasks import named_tasks, run_tasks
    from clip_train.eval.zeroshot_sets import add_zeroshot_sets

    check_keys(cfg)
    print_each_line_once()
    own_sets = add_zeroshot_sets(cfg.eval)
    suite = instantiate(cfg.benchmark) if cfg.get("benchmark") else None  # absent sets are listed here, before loading
    if (own_sets or suite is not None) and cfg.eval.get("tasks"):
        dropped = drop_drawn_tasks(cfg.eval.tasks)
        if dropped:
            log.info("evaluating your sets: the drawn-scene tasks are off (%s)", ", ".join(dropped))
    # groups of tasks as dicts: OmegaConf would take a dataclass task for a config
    tasks = named_tasks(instantiate(cfg.eval.tasks, _convert_="partial")) | (suite.tasks if suite else {})
    checkpoints = list(cfg.checkpoint) if isinstance(cfg.checkpoint, ListConfig) else [cfg.checkpoint]
    fabric = L.Fabric(accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes, precision=cfg.precision)
    fabric.launch()
    results = {}
    for label, model in _models(cfg, checkpoints, fabric.device):
        with fabric.autocast():
            metrics = run_tasks(tasks, model, fabric.global_rank, fabric.world_size)
        results[label] = metrics | (suite.summary(metrics) if suite else {})
    columns = list(results) if cfg.get("wise_ft", {}).get("source") else checkpoints
    if fabric.is_global_zero:
        out = results[label] if len(columns) == 1 else dict(zip(columns, results.values()))
        with open(os.path.join(cfg.paths.output_dir, "metrics.json"), "w") as f:
            json.dump(out, f, indent=2)
        summary_rows = list(suite.summary(results[label])) if suite else []
        write_results_table(results, cfg.paths.output_dir, summary_rows)
        print(json.dumps(out, indent=2))
    return results[label] if len(columns) == 1 else dict(zip(columns, results.values()))


def _models(cfg: DictConfig, checkpoints: list[str], device) -> Iterator[tuple]:
    """(table column, `ClipModel`) to evaluate: each checkpoint, or with `wise_ft.source` each alpha's interpolation of
    the one checkpoint with its source (`clip_train.wise_ft`)."""
    from clip_train.inference import load

    source = cfg.get("wise_ft", {}).get("source")
    if source is None:
        for label, checkpoint in zip(column_labels(checkpoints), checkpoints):
            yield label, load(checkpoint, device=device)
        return
    from clip_train.export import merged
    from clip_train.wise_ft import interpolate

    if len(checkpoints) != 1:
        raise ValueError("wise_ft.source interpolates one fine-tuned checkpoint: give checkpoint=PATH, not a list")
    # LoRA adapters merged first, so the weights of both sides pair up by name
    tuned, start = merged(load(checkpoints[0], device=device)), merged(load(source, device=device))
    for alpha in cfg.wise_ft.alphas:
        yield f"alpha={float(alpha):g}", interpolate(start, tuned, float(alpha))


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
def _hydra_main(cfg: DictConfig) -> None:
    run(cfg)


def main() -> None:
    refuse_repeated_keys(sys.argv[1:])
    sys.argv[1:] = quote_shard_ranges(sys.argv[1:])
    refuse_unknown_keys("evaluate", sys.argv[1:])
    if compose_only.requested():
        compose_only.write_composed("evaluate", sys.argv[1:])
        return
    _hydra_main()


if __name__ == "__main__":
    main()
