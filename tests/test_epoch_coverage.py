"""Non-resampled training epochs read every sample exactly once across ranks and workers, even when the
shards do not split evenly over the readers; where that cannot hold, start-up says how many samples repeat."""

import logging
import os
from collections import Counter

import pytest
from helpers import colour_samples, keys, make_datamodule, rank_loader, write_mixed_shards

from clip_train.data.position import position_state
from clip_train.data.shard_writer import write_shards


def five_shards_of_eight(tmp_path) -> str:
    """5 shards of 8 samples (keys 0..39), with sizes.json: 5 shards never split evenly over 2 or 4 readers."""
    write_shards(str(tmp_path), "train", colour_samples(40, size=8), samples_per_shard=8)
    return str(tmp_path / "train-{00000..00004}.tar")


def epoch_keys(datamodule, world: int) -> Counter:
    """How often each key comes out of one training epoch, summed over the `world` ranks."""
    seen = Counter()
    for rank in range(world):
        batches = list(rank_loader(datamodule, rank, world, training=True))
        assert len(batches) == datamodule.batches_per_epoch  # every rank steps alike (DDP needs it)
        seen.update(keys(batches))
    return seen


@pytest.mark.parametrize("batch_size", [4, 8])  # 10 batches (5 per worker), or 5 (3 and 2)
def test_one_rank_two_workers_read_every_sample_once(tmp_path, batch_size):
    datamodule = make_datamodule(five_shards_of_eight(tmp_path), batch_size=batch_size, num_workers=2, image_size=8)
    seen = epoch_keys(datamodule, world=1)
    assert datamodule.batches_per_epoch == 40 // batch_size
    assert {key: n for key, n in seen.items() if n != 1} == {} and sorted(seen) == list(range(40))


def test_two_ranks_two_workers_read_every_sample_once_and_every_epoch_anew(tmp_path):
    datamodule = make_datamodule(five_shards_of_eight(tmp_path), batch_size=4, num_workers=2, image_size=8)
    first = epoch_keys(datamodule, world=2)
    assert datamodule.batches_per_epoch == 5  # 40 samples / (2 ranks × 4)
    assert {key: n for key, n in first.items() if n != 1} == {} and sorted(first) == list(range(40))
    datamodule.set_epoch(1)
    order = [keys(rank_loader(datamodule, rank, 2, training=True)) for rank in range(2)]
    assert sorted(order[0] + order[1]) == list(range(40))
    datamodule.set_epoch(0)
    assert order != [keys(rank_loader(datamodule, rank, 2, training=True)) for rank in range(2)]


def test_fewer_shards_than_readers_still_split_by_samples(tmp_path):
    write_shards(str(tmp_path), "train", colour_samples(24, size=8), samples_per_shard=12)
    datamodule = make_datamodule(str(tmp_path / "train-{00000..00001}.tar"), batch_size=2, num_workers=3, image_size=8)
    seen = epoch_keys(datamodule, world=2)  # 2 shards, 6 readers: each starts and ends mid-shard
    assert sorted(seen) == list(range(24)) and set(seen.values()) == {1}


@pytest.mark.parametrize("consumed", [1, 2, 3, 4])
def test_a_resumed_epoch_continues_the_uneven_worker_split_exactly(tmp_path, consumed):
    """5 batches over 2 workers (3 and 2): after any number of consumed batches, a fresh loader with the resume
    point gives the rest of the uninterrupted epoch, batch for batch."""
    datamodule = make_datamodule(five_shards_of_eight(tmp_path), batch_size=8, num_workers=2, image_size=8)
    datamodule.setup("fit")
    uninterrupted = [list(batch["key"]) for batch in datamodule.train_dataloader()]
    datamodule.load_state_dict(position_state(0, consumed, datamodule.layout))
    resumed = [list(batch["key"]) for batch in datamodule.train_dataloader()]
    assert len(uninterrupted) == 5 and resumed == uninterrupted[consumed:]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"batch_size": 6}, "2 samples repeat"),  # 7 batches of 6 = 42 places for 40 samples
        ({"samples_per_epoch": 24}, "16 samples are skipped"),  # 6 batches of 4 take 24 of the 40
        ({"samples_per_epoch": 100}, "60 samples repeat"),
    ],
)
def test_epochs_that_cannot_hold_each_sample_once_say_how_many_repeat_or_are_skipped(tmp_path, caplog, settings, message):
    datamodule = make_datamodule(five_shards_of_eight(tmp_path), image_size=8, **settings)
    with caplog.at_level(logging.WARNING):
        datamodule.setup("fit")
    assert message in caplog.text and "per epoch" in caplog.text
    seen = Counter(keys(datamodule.train_dataloader()))
    places = datamodule.batches_per_epoch * datamodule.batch_size
    assert sum(seen.values()) == places and len(seen) == min(places, 40)  # each sample at most once more than others
    assert max(seen.values()) - min(seen.values()) <= 1


def test_whole_epochs_give_no_warning(tmp_path, caplog):
    datamodule = make_datamodule(five_shards_of_eight(tmp_path), batch_size=4, num_workers=2, image_size=8)
    with caplog.at_level(logging.WARNING):
        datamodule.setup("fit")
    assert "per epoch" not in caplog.text


def test_shards_of_unknown_size_warn_that_samples_may_repeat_or_be_skipped(tmp_path, caplog):
    write_shards(str(tmp_path), "train", colour_samples(40, size=8), samples_per_shard=8)
    remote = f"pipe:cat {tmp_path}/train-{{00000..00004}}.tar"
    datamodule = make_datamodule(remote, samples_per_epoch=40, image_size=8)
    with caplog.at_level(logging.WARNING):
        datamodule.setup("fit")
    assert "unknown" in caplog.text and "per epoch" in caplog.text
    assert len(keys(datamodule.train_dataloader())) == 40


def test_readers_that_meet_bad_samples_read_on_deterministically(tmp_path):
    """15 samples (3 of them bad) in 2 shards, counted from their headers; 4 batches of 4 over 2 workers take 16
    places: the readers' own ranges give 12 good pairs (plus one wrapped round), the rest comes from reading on
    into the following ranges. Every good sample is read, every run alike."""
    shards = write_mixed_shards(tmp_path)
    os.remove(tmp_path / "sizes.json")
    datamodule = make_datamodule(shards, num_workers=2, image_size=8)
    datamodule.setup("fit")
    assert datamodule.samples_per_epoch == 15 and datamodule.batches_per_epoch == 4
    first = [list(batch["key"]) for batch in datamodule.train_dataloader()]
    again = [list(batch["key"]) for batch in datamodule.train_dataloader()]
    assert first == again and len(first) == 4 and all(len(batch) == 4 for batch in first)
    assert {int(key) for batch in first for key in batch} == set(range(12))
