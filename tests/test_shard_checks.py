"""Start-up checks of the shards a run names: a directory, a file that is no tar and an empty shard are refused,
naming the path and what to give instead, before any model is built."""

import re

import pytest
from helpers import colour_samples, make_datamodule, tar_bytes

from clip_train.data.shard_writer import write_shards


def test_a_directory_is_named_as_one_with_the_patterns_to_use(tmp_path):
    write_shards(str(tmp_path / "cc3m"), "train", colour_samples(20), samples_per_shard=5)
    with pytest.raises(IsADirectoryError) as error:
        make_datamodule(str(tmp_path / "cc3m"))
    message = str(error.value)
    assert f"data.train_shards: '{tmp_path}/cc3m' is a directory" in message
    assert f"data.train_shards='{tmp_path}/cc3m/*.tar'" in message
    assert f"data.train_shards='{tmp_path}/cc3m/train-{{00000..00003}}.tar'" in message


@pytest.mark.parametrize(
    "content, what",
    [
        (b"<html><body>404 Not Found</body></html>\n" * 20, "is not a tar archive"),
        (b"", "is an empty file (0 bytes)"),
        (tar_bytes([]), "is a tar with no samples"),
    ],
    ids=["html_page", "zero_bytes", "empty_tar"],
)
def test_a_shard_without_samples_is_refused_naming_it(tmp_path, content, what):
    write_shards(str(tmp_path), "train", colour_samples(20), samples_per_shard=10)
    (tmp_path / "train-00002.tar").write_bytes(content)
    with pytest.raises(ValueError, match=rf"data.train_shards: shard '.*/train-00002.tar' {re.escape(what)}"):
        make_datamodule(str(tmp_path / "train-*.tar"))


def test_a_readme_matched_by_a_wildcard_is_refused_naming_it(tmp_path):
    write_shards(str(tmp_path), "train", colour_samples(20), samples_per_shard=10)
    (tmp_path / "README").write_text("shards written by img2dataset\n")
    with pytest.raises(ValueError, match=r"data.train_shards: shard '.*/README' is not a tar archive"):
        make_datamodule(str(tmp_path / "*"))
