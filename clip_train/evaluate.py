"""Evaluate a checkpoint or an exported model on the evaluation tasks of `eval.tasks`.

    python -m clip_train.evaluate checkpoint=logs/train/runs/RUN/checkpoints/last.ckpt
    python -m clip_train.evaluate checkpoint=exported/ eval=none \
        +eval/task@eval.tasks.zeroshot.imagenet=zeroshot eval.tasks.zeroshot.imagenet.root=/data/imagenet/val \
        eval.tasks.zeroshot.imagenet.classnames=classnames.txt eval.tasks.zeroshot.imagenet.templates=generic \
        eval.tasks.retrieval.shards='/data/coco_val/{00000..00004}.tar' eval.tasks.retrieval.multi_caption=true
    torchrun --nproc-per-node 8 -m clip_train.evaluate checkpoint=... accelerator=gpu devices=8

`+eval/task@eval.tasks.<path>=<node>` adds a task from `configs/eval/task/` (zeroshot, retrieval,
compositional, embedding_geometry) under that path, and `eval.tasks.<path>.<key>=...` sets its
keys; a key no task accepts stops the run before any model is loaded, naming it.

Prints the metrics as JSON on stdout and writes `metrics.json` into the run directory, each
named by its task's path (`clip_train.eval.tasks`): with the default `eval=synthetic`,
`zeroshot/<set>/top1|top5` and `zeroshot/<set>/per_class` ({class name: top-1}) for the drawn sets
`shapes` and `colours`, `compositional/<kind>` and `compositional/mean` (true caption against a hard
negative per image; chance 0.5), and always `retrieval/image_to_text_R@k`, `retrieval/text_to_image_R@k`
(ties at their expected value), `retrieval/{image_to_text,text_to_image}_{mean,median}_rank`,
`retrieval/alignment_gap` (and `retrieval/loss` for one caption per image). With several
processes every rank evaluates its share of each set (Lightning Fabric sets up the process
group) and counts are summed.
"""

import json
import os
import sys

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from clip_train import compose_only
from clip_train.cli import quote_shard_ranges, refuse_repeated_keys
from clip_train.config import check_keys
from clip_train.override_check import refuse_unknown_keys
from clip_train.paths import CONFIG_DIR
from clip_train.training.console_logging import print_each_line_once


def run(cfg: DictConfig) -> dict:
    """Run every task of `cfg.eval.tasks` on `cfg.checkpoint`; returns the metrics (also written to metrics.json)."""
    from clip_train.eval.tasks import named_tasks, run_tasks
    from clip_train.eval.zeroshot_sets import add_zeroshot_sets
    from clip_train.inference import load

    check_keys(cfg)
    print_each_line_once()
    add_zeroshot_sets(cfg.eval)
    # groups of tasks as dicts: OmegaConf would take a dataclass task for a config
    tasks = named_tasks(instantiate(cfg.eval.tasks, _convert_="partial"))
    fabric = L.Fabric(accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes, precision=cfg.precision)
    fabric.launch()
    model = load(cfg.checkpoint, device=fabric.device)
    with fabric.autocast():
        metrics = run_tasks(tasks, model, fabric.global_rank, fabric.world_size)
    if fabric.is_global_zero:
        with open(os.path.join(cfg.paths.output_dir, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)
        print(json.dumps(metrics, indent=2))
    return metrics


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
