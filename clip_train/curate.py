"""Curate image-text pairs with a trained model: CLIP-score filtering, near-duplicate removal, MetaCLIP balancing.

    python -m clip_train.curate checkpoint=CKPT data.train=/data/pairs.csv out=curated/ curate.keep_fraction=0.6
    python -m clip_train.curate checkpoint=exported/ data.train='/data/laion/{00000..00099}.tar' out=curated/ \
        curate.threshold=0.28 curate.dedup_threshold=0.95 curate.balance.entries=entries.txt curate.balance.t=20000
    torchrun --nproc-per-node 8 -m clip_train.curate ... accelerator=gpu devices=8

`data.train` is any source a training run reads (`clip_train.data.source_kinds`). Every unit of it is scored into
`out/scores/` (a rerun scores only units without a file; with several processes each rank scores every world-th
unit); then rank 0 filters, deduplicates, balances and writes `out/curated-NNNNN.tar` with `sizes.json`, each
sample's JSON holding its `clip_score`, plus `report.json`, `report.md` and `score_histogram.png`
(`clip_train.curation`).
"""

import json
import logging
import sys

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from clip_train import compose_only
from clip_train.cli import quote_shard_ranges, refuse_repeated_keys
from clip_train.override_check import refuse_unknown_keys
from clip_train.paths import CONFIG_DIR

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict | None:
    """Curate `cfg.data.train` into `cfg.out`; returns the report on rank 0 (None on the other ranks)."""
    from clip_train.curation.curate_set import CurationSettings, score_share, select_and_write
    from clip_train.data.shards import expand_shards
    from clip_train.data.source_kinds import ColumnKeys
    from clip_train.inference import load

    settings = CurationSettings.from_dict(OmegaConf.to_container(cfg.curate, resolve=True))
    data = cfg.data
    columns = ColumnKeys(data.img_key, data.caption_key, data.csv_separator)
    kind = instantiate(data.kind) if isinstance(data.kind, DictConfig) else data.kind  # a config with _target_
    units = expand_shards(data.train, "data.train", kind, columns, data.rows_per_unit)
    fabric = L.Fabric(accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes, precision=cfg.precision)
    fabric.launch()
    model = load(cfg.checkpoint, device=fabric.device)
    with fabric.autocast():
        scored = score_share(model, units, cfg.out, str(cfg.checkpoint), settings, fabric.global_rank, fabric.world_size)
    log.info("rank %d scored %d units (the rest of its share were scored before)", fabric.global_rank, scored)
    fabric.barrier()
    if not fabric.is_global_zero:
        return None
    report = select_and_write(units, cfg.out, str(cfg.checkpoint), settings)
    print(json.dumps(report["counts"], indent=2))
    return report


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="curate")
def _hydra_main(cfg: DictConfig) -> None:
    run(cfg)


def main() -> None:
    refuse_repeated_keys(sys.argv[1:])
    sys.argv[1:] = quote_shard_ranges(sys.argv[1:])
    refuse_unknown_keys("curate", sys.argv[1:])
    if compose_only.requested():
        compose_only.write_composed("curate", sys.argv[1:])
        return
    _hydra_main()


if __name__ == "__main__":
    main()
