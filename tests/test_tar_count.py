"""Plain tar shards without sidecars: sample counts from the tar headers agree with a full read, are cached,
and size the epoch; only remote shards still need data.samples_per_epoch."""

import gzip
import io
import logging
import os
import tarfile
from collections import Counter

import pytest
import webdataset as wds
from helpers import colour_samples, good_members, keys, make_datamodule, tar_bytes, write_bad_shards

from clip_train.data.bad_data import BadSampleCounter
from clip_train.data.shard_reader import shard_samples
from clip_train.data.shard_writer import encode_image
from clip_train.data.tar_count import count_tar_samples


def read_count(path: str) -> int:
    """The reference: samples a full read of the shard yields."""
    return sum(1 for _ in shard_samples(iter([{"url": path}]), BadSampleCounter()))


def write_with_shardwriter(folder, count: int, per_shard: int) -> str:
    """`count` colour samples (jpg, txt and json members) in shards written by webdataset, without sidecars."""
    os.makedirs(folder, exist_ok=True)
    with wds.ShardWriter(os.path.join(folder, "shard-%05d.tar"), maxcount=per_shard, verbose=0) as sink:
        for sample in colour_samples(count, size=8):
            sink.write({"__key__": sample.key, "jpg": encode_image(sample.image, "jpg"), "txt": sample.caption, "json": {}})
    shards = -(-count // per_shard)
    return os.path.join(folder, f"shard-{{00000..{shards - 1:05d}}}.tar")


def odd_members_tar(tar_format: int) -> bytes:
    """Members that test the grouping rules: several per sample, a repeated and an upper-case extension, a
    directory, a `__`-prefixed member, a name without extension, a symlink, and names longer than 100 bytes."""
    buffer = io.BytesIO()
    long_dir = "d" * 120
    with tarfile.open(fileobj=buffer, mode="w", format=tar_format) as tar:

        def add(name: str, payload: bytes = b"x", kind: bytes = tarfile.REGTYPE) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.size = kind, len(payload) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(payload) if kind == tarfile.REGTYPE else None)

        add("images", kind=tarfile.DIRTYPE)
        for name in ["a.jpg", "a.txt", "a.json", "a.cls", "b.jpg", "b.txt", "b.jpg", "c.jpg", "c.JPG", "c.txt"]:
            add(name, b"payload " * 70)
        add("__meta__.json", b"{}")
        add("images/__index__", b"skip me")
        add("README", b"no extension")
        add("d.jpg", kind=tarfile.SYMTYPE)
        add("d.txt")
        add(f"{long_dir}/e.jpg")
        add(f"{long_dir}/e.txt")
        add(f"{long_dir}/f.txt")
        add("naïve.txt")
    return buffer.getvalue()


@pytest.mark.parametrize("tar_format", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_header_count_equals_a_full_read_for_every_grouping_rule(tmp_path, tar_format):
    path = tmp_path / "odd.tar"
    path.write_bytes(odd_members_tar(tar_format))
    # a (4 members), b, b again (repeated jpg), c, c again (JPG), d (its jpg is a link), e, f, naïve
    assert count_tar_samples(str(path)) == read_count(str(path)) == 9


def test_header_count_equals_a_full_read_for_shardwriter_bad_and_gzipped_shards(tmp_path):
    pattern = write_with_shardwriter(tmp_path / "wds", 21, per_shard=8)
    paths = sorted(str(p) for p in (tmp_path / "wds").glob("*.tar"))
    bad, _, _ = write_bad_shards(str(tmp_path / "bad"))  # truncated, empty, zero-byte and foreign bytes too
    gzipped = tmp_path / "zipped.tar.gz"
    gzipped.write_bytes(gzip.compress(tar_bytes([m for i in range(5) for m in good_members(i)])))
    for path in [*paths, *bad, str(gzipped)]:
        assert count_tar_samples(path) == read_count(path), path
    assert [count_tar_samples(p) for p in paths] == [8, 8, 5] and pattern.endswith("{00000..00002}.tar")


def test_shardwriter_folder_streams_and_trains_without_samples_per_epoch(tmp_path, caplog):
    pattern = write_with_shardwriter(tmp_path / "wds", 40, per_shard=8)
    assert not [name for name in os.listdir(tmp_path / "wds") if name.endswith(".json")]
    with caplog.at_level(logging.INFO):
        datamodule = make_datamodule(pattern, pattern, num_workers=2, image_size=8)
    assert datamodule.samples_per_epoch == 40
    assert "40 samples" in caplog.text and "5 shards" in caplog.text
    datamodule.setup("fit")
    assert Counter(keys(datamodule.train_dataloader())) == Counter(range(40))  # each sample once
    assert sorted(keys(datamodule.val_dataloader())) == list(range(40))


def test_counts_are_cached_until_a_shard_changes(tmp_path, caplog):
    pattern = write_with_shardwriter(tmp_path / "wds", 24, per_shard=8)
    make_datamodule(pattern)
    with caplog.at_level(logging.INFO):
        assert make_datamodule(pattern).samples_per_epoch == 24
    assert "3 of them from the cache" in caplog.text
    last = tmp_path / "wds" / "shard-00002.tar"
    last.write_bytes(tar_bytes([m for i in range(3) for m in good_members(i)]))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert make_datamodule(pattern).samples_per_epoch == 19
    assert "2 of them from the cache" in caplog.text


@pytest.mark.slow
def test_a_run_trains_on_plain_tars(compose_config, tmp_path):
    from clip_train.train import run

    pattern = write_with_shardwriter(tmp_path / "wds", 24, per_shard=8)
    cfg = compose_config(
        "data=webdataset", f"data.train_shards='{pattern}'", f"data.val_shards='{pattern}'", "data.batch_size=8",
        "data.num_workers=0", "model=test", "trainer.max_steps=2", "trainer.num_sanity_val_steps=0",
        f"paths.output_dir={tmp_path}/run",
    )  # fmt: skip
    assert run(cfg)["data/bad_samples"] == 0


def test_remote_shards_without_a_size_stop_with_the_keys_to_set(tmp_path):
    pattern = write_with_shardwriter(tmp_path / "wds", 16, per_shard=8)
    with pytest.raises(ValueError, match=r"data.samples_per_epoch.*remote.*`samples: N`"):
        make_datamodule(f"pipe:cat {pattern}")
    assert make_datamodule(f"pipe:cat {pattern}", samples_per_epoch=16).samples_per_epoch == 16


def test_unsized_local_sources_are_counted(tmp_path):
    a = write_with_shardwriter(tmp_path / "a", 16, per_shard=8)
    datamodule = make_datamodule(None, sources=[{"shards": a, "weight": 1.0}], resampled=True)
    assert datamodule.samples_per_epoch == 16 and datamodule.sources[0].shard_sizes == [8, 8]
