"""A run on the user's own shards never meets the embedded drawn scenes: no synthetic set written, no validation
or evaluation on drawn pictures; validation is data.val_shards, or none (said at start-up)."""

import logging
import os

import pytest
from helpers import colour_samples

from clip_train.data.shard_writer import write_shards
from clip_train.train import run

DRAWN_METRICS = ("zeroshot/", "compositional/")


@pytest.mark.slow
@pytest.mark.parametrize("with_val_shards", [False, True])
def test_own_shards_train_without_the_drawn_set(with_val_shards, compose_config, tmp_path, caplog):
    write_shards(str(tmp_path / "shards"), "train", colour_samples(32), samples_per_shard=8)
    write_shards(str(tmp_path / "shards"), "val", colour_samples(8, start=100), samples_per_shard=8)
    cache = tmp_path / "cache"
    overrides = [
        f"data.train_shards='{tmp_path}/shards/train-{{00000..00003}}.tar'", f"paths.cache_dir={cache}",
        "model=test", "data.batch_size=8", "data.num_workers=0", "trainer.max_steps=4", "trainer.val_check_interval=2",
        "trainer.num_sanity_val_steps=0", "logger=csv",
    ]  # fmt: skip
    if with_val_shards:
        overrides.append(f"data.val_shards={tmp_path}/shards/val-00000.tar")
    with caplog.at_level(logging.INFO):
        metrics = run(compose_config(*overrides))  # data=synthetic and eval=synthetic, the defaults
    assert not [name for name in metrics if name.startswith(DRAWN_METRICS)]
    assert not [name for name in os.listdir(cache) if name.startswith("scenes-") or "shapes" in name or "colours" in name]
    assert metrics["train/samples_seen"] == 4 * 8
    if with_val_shards:
        assert "val/image_to_text_R@1" in metrics and "validating on 1 shard(s)" in caplog.text
    else:
        assert not [name for name in metrics if name.startswith("val/")]
        assert "no validation: data.val_shards is not set" in caplog.text
    assert "the drawn-scene evaluation tasks are off" in caplog.text
