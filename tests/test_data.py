"""The shard data module against shards written here: counts, keys, shapes, bad data and errors."""

import os

import pytest
import torch
from helpers import colour_samples, keys, make_datamodule, rank_loader, write_mixed_shards

from clip_train.data.shard_writer import write_shards
from clip_train.data.shards import count_samples, expand_shards


def test_expand_shards_braces_lists_and_missing(colour_shards, tmp_path):
    urls = expand_shards(colour_shards, "data.train_shards")
    assert [os.path.basename(u) for u in urls] == [f"train-0000{i}.tar" for i in range(4)]
    assert expand_shards([urls[0], urls[1]], "x") == urls[:2]
    assert expand_shards(f"{urls[0]}::{urls[3]}", "x") == [urls[0], urls[3]]
    assert expand_shards("pipe:cat /nowhere/{0..1}.tar", "x") == ["pipe:cat /nowhere/0.tar", "pipe:cat /nowhere/1.tar"]
    with pytest.raises(FileNotFoundError, match=r"data.val_shards: shard '.*/missing-00001.tar' does not exist"):
        expand_shards([urls[0], str(tmp_path / "missing-00001.tar")], "data.val_shards")
    assert count_samples(urls) == 40


def test_missing_shard_fails_at_construction(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere-00000.tar"):
        make_datamodule(str(tmp_path / "nowhere-{00000..00001}.tar"))


def test_shards_without_sidecars_are_counted_and_remote_ones_need_samples_per_epoch(colour_shards):
    os.remove(os.path.join(os.path.dirname(colour_shards.split("{")[0]), "sizes.json"))
    assert make_datamodule(colour_shards).samples_per_epoch == 40  # counted from the tar headers
    with pytest.raises(ValueError, match="data.samples_per_epoch"):
        make_datamodule(f"pipe:cat {colour_shards}")
    assert make_datamodule(f"pipe:cat {colour_shards}", samples_per_epoch=40).samples_per_epoch == 40


def test_training_batches_have_shapes_and_epoch_length(colour_shards):
    datamodule = make_datamodule(colour_shards)
    datamodule.setup("fit")
    batches = list(datamodule.train_dataloader())
    assert len(batches) == datamodule.batches_per_epoch == 10  # 40 samples / batch 4
    batch = batches[0]
    assert batch["image"].shape == (4, 3, 24, 24) and batch["image"].dtype == torch.uint8
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (4, 8)
    assert batch["input_ids"].dtype == torch.long
    assert sum(int(b["bad_samples"].sum()) for b in batches) == 0


def test_validation_reads_every_pair_exactly_once(colour_shards):
    datamodule = make_datamodule(colour_shards, colour_shards, batch_size=6)
    datamodule.setup("validate")
    batches = list(datamodule.val_dataloader())
    assert [b["image"].shape[0] for b in batches] == [6] * 6 + [4]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_ranks_read_disjoint_samples_and_equal_batch_counts(tmp_path, num_workers):
    # uneven shards: 7 shards of 10, 10, ..., and a last one of 3 samples
    write_shards(str(tmp_path), "train", colour_samples(63), samples_per_shard=10)
    pattern = str(tmp_path / "train-{00000..00006}.tar")
    datamodule = make_datamodule(pattern, pattern, num_workers=num_workers)
    validation = {rank: keys(rank_loader(datamodule, rank, 2, training=False)) for rank in range(2)}
    assert set(validation[0]).isdisjoint(validation[1])
    assert sorted(validation[0] + validation[1]) == list(range(63))

    epoch = {rank: keys(rank_loader(datamodule, rank, 2, training=True)) for rank in range(2)}
    assert datamodule.batches_per_epoch == 8  # ceil(63 / (2 ranks × 4))
    assert len(epoch[0]) == len(epoch[1]) == 8 * 4
    both = epoch[0] + epoch[1]  # 64 places for 63 samples: every sample once, one of them twice
    assert set(both) == set(range(63)) and len(both) - len(set(both)) == 1


def test_resampled_ranks_draw_different_streams(colour_shards):
    datamodule = make_datamodule(colour_shards, resampled=True, samples_per_epoch=32)
    first, second = (keys(rank_loader(datamodule, rank, 2, training=True)) for rank in range(2))
    assert len(first) == len(second) == 16
    assert first != second


def test_epochs_differ_and_are_reproducible(colour_shards):
    datamodule = make_datamodule(colour_shards)
    datamodule.setup("fit")
    epoch0 = keys(datamodule.train_dataloader())
    datamodule.set_epoch(1)
    epoch1 = keys(datamodule.train_dataloader())
    datamodule.set_epoch(0)
    assert keys(datamodule.train_dataloader()) == epoch0
    assert epoch0 != epoch1 and len(epoch0) == len(epoch1) == 40
    assert sorted(epoch0) == sorted(epoch1) == list(range(40))  # 40 samples in 10 batches of 4: a permutation


def test_too_few_shards_of_unknown_size_for_ranks_and_workers_fails_fast(colour_shards):
    remote = f"pipe:cat {colour_shards}"  # sizes of remote shards are unknown: readers need whole shards
    datamodule = make_datamodule(remote, num_workers=3, samples_per_epoch=40)
    datamodule.rank, datamodule.world = 0, 2
    with pytest.raises(ValueError, match="4 training shards of unknown size cannot feed 2 ranks × 3 workers"):
        datamodule.setup("fit")


def test_bad_samples_are_skipped_and_counted(tmp_path):
    shards = write_mixed_shards(tmp_path)
    datamodule = make_datamodule(shards, shards, samples_per_epoch=12)
    datamodule.setup("validate")
    batches = list(datamodule.val_dataloader())
    assert sorted(keys(batches)) == list(range(12))
    assert sum(int(b["bad_samples"].sum()) for b in batches) == 3


@pytest.mark.slow
def test_training_run_reports_bad_samples_of_every_rank_in_metrics(compose_config, colour_shards, tmp_path):
    from clip_train.train import run

    shards = write_mixed_shards(tmp_path / "mixed")
    cfg = compose_config(
        "data=webdataset", f"data.train_shards='{colour_shards}'", f"data.val_shards=[{shards[0]},{shards[1]}]",
        "data.batch_size=8", "data.num_workers=0", "model=test", "trainer.max_steps=2",
        "trainer.num_sanity_val_steps=0", f"paths.output_dir={tmp_path}/run",
    )  # fmt: skip
    metrics = run(cfg)  # the clean training shards add none; the one final validation pass meets all 3
    assert (metrics["data/bad_samples"], metrics["val/bad_samples"]) == (0, 3)


def test_learnt_tokenizer_wraps_captions_and_is_cached(colour_shards):
    first = make_datamodule(colour_shards)
    second = make_datamodule(colour_shards)
    assert first.tokenizer_source == second.tokenizer_source and os.path.isdir(first.tokenizer_source)
    tokens = first.tokenizer(["a red square"])["input_ids"][0]
    assert tokens[0] == first.tokenizer.bos_token_id and tokens[-1] == first.tokenizer.eos_token_id
    assert first.tokenizer.decode(tokens, skip_special_tokens=True).strip() == "a red square"


def test_training_on_shards_without_a_readable_sample_fails_instead_of_spinning(tmp_path):
    for index in range(2):
        (tmp_path / f"junk-{index:05d}.tar").write_bytes(b"this is not a tar archive" * 100)
    with pytest.raises(ValueError, match="junk-00000.tar' is not a tar archive"):  # local: refused at start-up
        make_datamodule(str(tmp_path / "junk-{00000..00001}.tar"), samples_per_epoch=8)
    datamodule = make_datamodule(f"pipe:cat {tmp_path}/junk-{{00000..00001}}.tar", samples_per_epoch=8)  # unchecked
    datamodule.setup("fit")
    with pytest.raises(RuntimeError, match="no readable sample"):
        next(iter(datamodule.train_dataloader()))
