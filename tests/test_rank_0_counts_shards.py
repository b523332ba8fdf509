"""Local shards without a sizes sidecar are counted once, by rank 0, and every rank gets its counts (issue 23.5)."""

import builtins
import os

import pytest
from gloo import on_gloo_ranks
from helpers import colour_samples, make_datamodule

from clip_train.data.shard_writer import write_shards


def _build_and_set_up(rank: int, world: int, pattern: str, tokenizer: str, cache_dir: str) -> dict:
    """On one gloo rank: the data module built as `python -m clip_train` builds it under a launcher that set RANK,
    then `setup`; the shard files it opened (every `open` of a .tar) and the sizes it ended with."""
    os.environ["RANK"] = str(rank)
    os.environ["CLIP_TRAIN_CACHE"] = cache_dir
    opened = []
    real_open = builtins.open

    def recording_open(file, *args, **kwargs):
        if str(file).endswith(".tar"):
            opened.append(str(file))
        return real_open(file, *args, **kwargs)

    builtins.open = recording_open
    try:
        datamodule = make_datamodule(pattern, tokenizer=tokenizer, cache_dir=cache_dir, num_workers=1)
        datamodule.rank, datamodule.world = rank, world
        datamodule.setup("fit")
    finally:
        builtins.open = real_open
    return {
        "opened": opened,
        "sizes": datamodule.train_shard_sizes,
        "samples_per_epoch": datamodule.samples_per_epoch,
        "batches_per_epoch": datamodule.batches_per_epoch,
    }


@pytest.mark.slow
def test_only_rank_0_reads_the_tars_and_both_ranks_get_its_counts(tmp_path):
    """3 shards of 10, 10 and 7 samples, no sizes.json, 2 gloo ranks with a fresh count cache: rank 0 opens
    every tar (to check and count it), rank 1 none; both end with sizes [10, 10, 7] (what the shards were
    written with), 27 samples per epoch and 4 batches of 4 per rank. Before, rank 1 counted the tars itself."""
    write_shards(str(tmp_path / "shards"), "train", colour_samples(27), samples_per_shard=10)
    os.remove(tmp_path / "shards" / "sizes.json")
    pattern = str(tmp_path / "shards" / "train-{00000..00002}.tar")
    tokenizer = make_datamodule(pattern, cache_dir=str(tmp_path / "tokenizer_cache")).tokenizer_source  # learnt once
    ranks = on_gloo_ranks(_build_and_set_up, 2, tmp_path, pattern, tokenizer, str(tmp_path / "count_cache"))
    shards = sorted(pattern.replace("{00000..00002}", f"{i:05d}") for i in range(3))
    assert sorted(set(ranks[0]["opened"])) == shards and ranks[1]["opened"] == []
    for rank in ranks:
        assert (rank["sizes"], rank["samples_per_epoch"], rank["batches_per_epoch"]) == ([10, 10, 7], 27, 4)
