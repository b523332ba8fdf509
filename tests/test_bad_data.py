"""Bad data: every kind is skipped and counted as planted, unreadable shards do not stop a run, a broken
dataset does, and metrics.json reports the counts by kind."""

import json
import logging
import os

import pytest
import torch
from helpers import colour_samples, good_members, keys, make_datamodule, small_encoder, tar_bytes, write_bad_shards

from clip_train.data.bad_data import BAD_KINDS, BadDataError, BadDataPolicy, BadSampleCounter
from clip_train.data.pipeline import decode_pair
from clip_train.data.shard_reader import shard_samples
from clip_train.data.shard_writer import encode_image, write_shards
from clip_train.data.shards import expand_shards


def read(urls: list[str], counter: BadSampleCounter) -> list[int]:
    samples = shard_samples(({"url": url} for url in urls), counter)
    return [int(pair[2]) for sample in samples if (pair := decode_pair(sample, counter)) is not None]


def counts(counter: BadSampleCounter) -> dict[str, int]:
    return {kind: n for kind, n in zip(BAD_KINDS, counter.counts) if n}


JPEG = encode_image(colour_samples(1)[0].image, "jpg")
ONE_BAD_SAMPLE = {
    "corrupt_image": [("000000009.jpg", JPEG[: len(JPEG) // 2]), ("000000009.txt", b"cut short")],
    "not_image": [("000000009.jpg", b"<html><body>403 Forbidden</body></html>"), ("000000009.txt", b"a page")],
    "empty_file": [("000000009.jpg", JPEG), ("000000009.txt", b"")],
    "missing_image": [("000000009.txt", b"no picture"), ("000000009.json", b"{}")],
    "missing_caption": [("000000009.jpg", JPEG), ("000000009.json", b"{}")],
    "empty_caption": [("000000009.jpg", JPEG), ("000000009.txt", b" \t\n")],
    "caption_not_utf8": [("000000009.jpg", JPEG), ("000000009.txt", b"\xff\xfeu\x00")],
}


@pytest.mark.parametrize("kind", sorted(ONE_BAD_SAMPLE))
def test_each_sample_kind_is_skipped_and_counted_as_itself(tmp_path, kind):
    path = tmp_path / "shard.tar"
    path.write_bytes(tar_bytes(good_members(0) + ONE_BAD_SAMPLE[kind] + good_members(1)))
    counter = BadSampleCounter()
    assert read([str(path)], counter) == [0, 1]
    assert counts(counter) == {kind: 1} and counter.decoded == 2
    fresh = counter.take()
    assert fresh.tolist() == [int(k == kind) for k in BAD_KINDS] and counter.take().sum() == 0


def test_every_shard_kind_and_the_samples_before_a_cut(tmp_path):
    paths, planted, good = write_bad_shards(str(tmp_path))
    counter = BadSampleCounter()
    assert read(paths[1:], counter) == [k for k in good if k >= 10]
    assert counts(counter) == {"empty_shard": 2, "truncated_tar": 2, "corrupt_tar": 1}


def test_unopenable_shards_are_skipped_local_and_pipe(tmp_path):
    (tmp_path / "ok.tar").write_bytes(tar_bytes(good_members(3)))
    counter = BadSampleCounter()
    urls = [str(tmp_path / "deleted.tar"), f"pipe:cat {tmp_path}/deleted.tar", str(tmp_path / "ok.tar")]
    assert read(urls, counter) == [3]
    assert counts(counter) == {"unreadable_shard": 2}


def test_shard_deleted_after_start_up_is_reported_and_training_goes_on(tmp_path, caplog):
    write_shards(str(tmp_path), "train", colour_samples(50), samples_per_shard=10)
    datamodule = make_datamodule(str(tmp_path / "train-{00000..00004}.tar"), samples_per_epoch=80, shuffle_buffer=1)
    datamodule.setup("fit")
    os.remove(tmp_path / "train-00002.tar")
    with caplog.at_level(logging.WARNING):
        batches = list(datamodule.train_dataloader())
    assert len(batches) == 20 and set(keys(batches)) == set(range(20)) | set(range(30, 50))
    unreadable = sum(int(b["bad_samples"][BAD_KINDS.index("unreadable_shard")]) for b in batches)
    assert unreadable in (1, 2) and sum(int(b["bad_samples"].sum()) for b in batches) == unreadable
    assert "train-00002.tar" in caplog.text and "unreadable_shard" in caplog.text


def test_start_up_fails_on_a_pattern_that_matches_nothing_naming_it(tmp_path):
    write_shards(str(tmp_path), "train", colour_samples(20), samples_per_shard=10)
    assert expand_shards(str(tmp_path / "train-*.tar"), "x") == [str(tmp_path / f"train-0000{i}.tar") for i in range(2)]
    with pytest.raises(FileNotFoundError, match=r"data.train_shards: pattern '.*/val-\*.tar' matches no file"):
        make_datamodule(str(tmp_path / "val-*.tar"))
    with pytest.raises(FileNotFoundError, match=r"data.train_shards: shard '.*/train-00002.tar' does not exist"):
        make_datamodule(str(tmp_path / "train-{00000..00002}.tar"))
    assert expand_shards("pipe:aws s3 cp s3://b/x-{0..1}.tar -", "x") == [
        "pipe:aws s3 cp s3://b/x-0.tar -",
        "pipe:aws s3 cp s3://b/x-1.tar -",
    ]
    with pytest.raises(ValueError, match=r"x: webdataset cannot open 's3://b/x-0.tar' directly; use 'pipe:aws s3 cp"):
        expand_shards("s3://b/x-{0..1}.tar", "x")


def test_bad_rate_above_threshold_raises_naming_rate_kinds_and_shards():
    counter = BadSampleCounter(BadDataPolicy(max_rate=0.25, min_items=10))
    counter.decoded = 6
    for _ in range(3):
        counter.skip("not_image", "a.tar", "x")  # 3 of 9 is above 0.25, but 9 items are below the minimum
    counter.decoded = 9
    with pytest.raises(BadDataError) as error:
        counter.skip("empty_caption", "b.tar", "x")  # 4 of 13 = 30.8%
    message = str(error.value)
    assert "30.8% of the 13 items" in message and "max_bad_sample_rate=0.25" in message
    assert "not_image 3, empty_caption 1" in message and "a.tar (3), b.tar (1)" in message
    at_threshold = BadSampleCounter(BadDataPolicy(max_rate=0.25, min_items=4))
    at_threshold.decoded = 3
    at_threshold.skip("not_image", "a.tar", "x")  # exactly 1 of 4: tolerated
    with pytest.raises(ValueError, match="max_bad_sample_rate"):
        BadDataPolicy(max_rate=1.5)


def test_a_broken_dataset_stops_the_loader_with_the_rate_message(tmp_path):
    paths, _, _ = write_bad_shards(str(tmp_path))
    trainable = [paths[0], paths[3], paths[4]]  # an empty or foreign training shard is refused at start-up
    datamodule = make_datamodule(trainable, paths, samples_per_epoch=8, max_bad_sample_rate=0.2, bad_sample_rate_min_items=20)
    datamodule.setup("validate")
    with pytest.raises(BadDataError, match=r"of the 2\d items this data worker met were bad.*bad-00000.tar \(7\)"):
        list(datamodule.val_dataloader())


@pytest.mark.slow
def test_run_over_every_kind_completes_and_validation_counts_them_apart_from_training(compose_config, colour_shards, tmp_path):
    from omegaconf import OmegaConf

    from clip_train.train import run

    paths, planted, good = write_bad_shards(str(tmp_path / "bad"))
    planted["unreadable_shard"] = 1
    cfg = compose_config(
        "data=webdataset", f"data.train_shards='{colour_shards}'", "data.batch_size=8", "data.num_workers=0",
        "model=test", "trainer.max_steps=2", f"paths.output_dir={tmp_path}/run",
    )  # fmt: skip
    OmegaConf.update(cfg, "data.val_shards", [*paths, f"pipe:cat {tmp_path}/bad/gone.tar"])
    run(cfg)  # the sanity check and the final validation both meet bad items; training meets none
    with open(tmp_path / "run" / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["data/bad_samples"] == 0  # was 13 + the sanity check's: validation's items in the training total
    assert {kind: metrics[f"val/bad_samples/{kind}"] for kind in BAD_KINDS} == planted  # one pass's count
    assert metrics["val/bad_samples"] == sum(planted.values()) == 13


def test_checkpoint_counters_keep_the_kinds():
    from clip_train.objectives import InfoNCE
    from clip_train.training.module import ClipModule

    def module() -> ClipModule:
        return ClipModule(small_encoder(), InfoNCE(), optimizer=None, scheduler=None)

    saved = module()
    saved.samples_seen, saved.bad_samples = 5, torch.arange(len(BAD_KINDS))
    checkpoint = {"state_dict": saved.state_dict()}
    saved.on_save_checkpoint(checkpoint)
    assert checkpoint["counters"]["bad_samples"]["corrupt_tar"] == BAD_KINDS.index("corrupt_tar")
    restored = module()
    restored.on_load_checkpoint(checkpoint)
    assert restored.bad_samples.tolist() == list(range(len(BAD_KINDS))) and restored.samples_seen == 5
