"""Evaluate a checkpoint or an exported model: zero-shot classification and image↔text retrieval.

    python -m clip_train.evaluate checkpoint=logs/train/runs/RUN/checkpoints/last.ckpt
    python -m clip_train.evaluate checkpoint=exported/ eval=none \
        eval.zeroshot.imagenet.root=/data/imagenet/val eval.zeroshot.imagenet.classnames=classnames.txt \
        eval.zeroshot.imagenet.templates=generic \
        eval.retrieval.shards='/data/coco_val/{00000..00004}.tar' eval.retrieval.multi_caption=true
    torchrun --nproc-per-node 8 -m clip_train.evaluate checkpoint=... accelerator=gpu devices=8

Prints the metrics as JSON on stdout and writes `metrics.json` into the run directory:
`zeroshot/<name>/top1|top5` and `zeroshot/<name>/per_class` ({class name: top-1}), and
`retrieval/image_to_text_R@k`, `retrieval/text_to_image_R@k` (ties at their expected value),
`retrieval/{image_to_text,text_to_image}_{mean,median}_rank`, `retrieval/alignment_gap` (and
`retrieval/loss` for one caption per image), and `compositional/<kind>` and `compositional/mean`
(true caption against a hard negative per image; chance 0.5) when `eval.compositional` is set.
With several processes every rank encodes its share of each set (Lightning Fabric sets up the
process group) and counts are summed.
"""

import json
import os
import sys

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from clip_train.cli import prepare_overrides
from clip_train.paths import CONFIG_DIR


def run(cfg: DictConfig) -> dict:
    """Evaluate `cfg.checkpoint` on every configured set; returns the metrics (also written to metrics.json)."""
    from clip_train.data.shards import expand_shards
    from clip_train.data.synthetic import SyntheticShards
    from clip_train.eval.compositional import CompositionalSet, compositional_metrics
    from clip_train.eval.runner import retrieval_on_shards, zeroshot_metrics
    from clip_train.eval.zeroshot import ZeroShotSet
    from clip_train.inference import load

    sets = {name: ZeroShotSet.from_config(name, spec) for name, spec in OmegaConf.to_container(cfg.eval.zeroshot).items()}
    compositional = CompositionalSet.from_config(cfg.eval.compositional) if cfg.eval.get("compositional") else None
    retrieval = cfg.eval.retrieval
    shards = retrieval.shards or SyntheticShards().write(cfg.paths.cache_dir)[1]
    urls = expand_shards(shards, "eval.retrieval.shards")
    fabric = L.Fabric(accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes, precision=cfg.precision)
    fabric.launch()
    model = load(cfg.checkpoint, device=fabric.device)
    share = {"rank": fabric.global_rank, "world": fabric.world_size, "batch_size": cfg.batch_size,
             "num_workers": cfg.num_workers, "progress": fabric.is_global_zero}  # fmt: skip
    metrics = {}
    with fabric.autocast():
        for name, spec in sets.items():
            result = zeroshot_metrics(model, name, spec, cfg.paths.cache_dir, **share)
            metrics |= {f"zeroshot/{name}/{key}": value for key, value in result.items()}
        result = retrieval_on_shards(model, urls, retrieval.multi_caption, **share)
        metrics |= {f"retrieval/{key}": value for key, value in result.items()}
        if compositional is not None:
            ranks = {key: share[key] for key in ("rank", "world", "batch_size", "progress")}
            result = compositional_metrics(model, compositional, **ranks)
            metrics |= {f"compositional/{key}": value for key, value in result.items()}
    if fabric.is_global_zero:
        with open(os.path.join(cfg.paths.output_dir, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)
        print(json.dumps(metrics, indent=2))
    return metrics


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="evaluate")
def _hydra_main(cfg: DictConfig) -> None:
    run(cfg)


def main() -> None:
    sys.argv[1:] = prepare_overrides(sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()
