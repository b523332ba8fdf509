"""Every kind of source reads each sample exactly once per epoch over 2 ranks × 2 workers, and a resumed epoch
continues exactly, as tar shards do (tests/test_epoch_coverage.py): a CSV of image paths, a parquet of image
bytes, JSON lines, an image folder and a saved Hugging Face dataset, all cut into uneven units."""

from collections import Counter

import pytest
from helpers import SOURCE_FORMATS, colour_samples, make_datamodule, write_source

from clip_train.data.bad_data import BadSampleCounter
from clip_train.data.position import position_state
from clip_train.data.shard_writer import Sample
from clip_train.data.source_kinds import unit_samples

WORLD, SAMPLES = 2, 40


def batch_keys(datamodule, rank: int) -> list[list[str]]:
    """Rank `rank`'s training batches of the data module's current epoch, as lists of sample keys."""
    datamodule.rank, datamodule.world = rank, WORLD
    datamodule.setup("fit")
    return [list(batch["key"]) for batch in datamodule.train_dataloader()]


@pytest.mark.parametrize("form", SOURCE_FORMATS)
def test_every_kind_reads_each_sample_once_per_epoch_and_resumes_mid_epoch_exactly(tmp_path, form):
    """40 samples in units of 7 (7, 7, 7, 7, 7, 5; the HF dataset's 3 files of 14, 13, 13 rows cut again), batches of
    4 on 2 ranks × 2 workers: 5 batches per rank (3 and 2 per worker) cover every sample once. Resuming epoch 1 after
    3 batches, mid-way through both workers' shares, gives every rank the rest of its uninterrupted epoch."""
    samples = [Sample(s.key, s.image, f"{s.caption} {i}", {}) for i, s in enumerate(colour_samples(SAMPLES, size=8))]
    source = write_source(form, tmp_path, samples)
    datamodule = make_datamodule(source, batch_size=4, num_workers=2, image_size=8, rows_per_unit=7)
    sizes = datamodule.train_shard_sizes
    assert sum(sizes) == SAMPLES and len(set(sizes)) > 1  # uneven units
    every_key = [s["__key__"] for s in unit_samples(({"url": u} for u in datamodule.train_urls), BadSampleCounter())]
    assert len(set(every_key)) == SAMPLES  # the reference: each unit read whole, one after the other

    epochs = {}
    for epoch in (0, 1):
        datamodule.set_epoch(epoch)
        epochs[epoch] = [batch_keys(datamodule, rank) for rank in range(WORLD)]
        assert [len(batches) for batches in epochs[epoch]] == [5, 5]  # DDP needs every rank to step alike
        seen = Counter(key for batches in epochs[epoch] for batch in batches for key in batch)
        assert sorted(seen) == sorted(every_key) and set(seen.values()) == {1}, f"epoch {epoch}"
    assert epochs[0] != epochs[1]  # every epoch in a new order

    datamodule.load_state_dict(position_state(1, 3, datamodule.layout))
    for rank in range(WORLD):
        assert batch_keys(datamodule, rank) == epochs[1][rank][3:], f"rank {rank}"
