"""A mid-epoch resume skips the batches it trained on without decoding their images
(`clip_train.data.deferred_decode`), and still yields the uninterrupted run's batches."""

import multiprocessing
import os

import pytest
import torch
from helpers import colour_samples, make_datamodule, write_mixed_shards

from clip_train.data.position import position_state
from clip_train.data.shard_writer import write_shards


class CountingDecode:
    """The data module's image decode, counting its calls in a counter the DataLoader workers share (fork)."""

    def __init__(self, decode):
        self.decode, self.calls = decode, multiprocessing.Value("q", 0)

    def __call__(self, data: bytes) -> torch.Tensor:
        with self.calls.get_lock():
            self.calls.value += 1
        return self.decode(data)


def test_resuming_after_15_of_20_batches_decodes_only_the_images_of_the_5_it_yields(tmp_path):
    """80 samples in 4 shards, batches of 4 over 2 workers: an epoch of 20 batches reads each sample once. The
    uninterrupted epoch decodes 80 images (one per sample, the reference for the counter). Resumed after 15
    batches, the loader yields batches 15-19, equal key for key and pixel for pixel, and decodes exactly their
    20 images: no slack, since each worker's range holds exactly its quota of samples, so every pair decoded
    (on intake after the skip, or on leaving the shuffle buffer that the skip filled) lands in a yielded batch.
    Before the fix it decoded 80 (every skipped sample too)."""
    write_shards(str(tmp_path), "train", colour_samples(80, size=32), samples_per_shard=20)
    datamodule = make_datamodule(str(tmp_path / "train-{00000..00003}.tar"), num_workers=2, image_size=24)
    datamodule.setup("fit")
    assert datamodule.batches_per_epoch == 20
    datamodule.train_decode = CountingDecode(datamodule.train_decode)
    uninterrupted = list(datamodule.train_dataloader())
    assert datamodule.train_decode.calls.value == 80

    datamodule.train_decode.calls.value = 0
    datamodule.load_state_dict(position_state(0, 15, datamodule.layout))
    resumed = list(datamodule.train_dataloader())
    assert [list(b["key"]) for b in resumed] == [list(b["key"]) for b in uninterrupted[15:]]
    assert all(torch.equal(r["image"], u["image"]) for r, u in zip(resumed, uninterrupted[15:]))
    yielded = sum(len(batch["key"]) for batch in resumed)
    assert yielded == 20 and datamodule.train_decode.calls.value <= yielded


@pytest.mark.parametrize("consumed", [1, 2, 3])
def test_a_resume_that_skips_bad_samples_unread_still_continues_the_uninterrupted_epoch(tmp_path, consumed):
    """Shards with an image that is no image, a caption without an image and a truncated PNG (sizes counted from the
    headers): 4 batches of 4 over 2 workers. Reading only image headers while skipping drops the same samples as
    decoding them did, so the resumed loader gives the rest of the uninterrupted epoch, batch for batch."""
    shards = write_mixed_shards(tmp_path)
    os.remove(tmp_path / "sizes.json")
    datamodule = make_datamodule(shards, num_workers=2, image_size=8)
    datamodule.setup("fit")
    uninterrupted = [list(batch["key"]) for batch in datamodule.train_dataloader()]
    datamodule.load_state_dict(position_state(0, consumed, datamodule.layout))
    assert [list(batch["key"]) for batch in datamodule.train_dataloader()] == uninterrupted[consumed:]
