"""scripts/make_shards.py turns a folder of captioned images into shards the data module reads."""

import os
import subprocess
import sys

from samples import colour_samples

from clip_train.data.shards import count_samples, expand_shards

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "scripts", "make_shards.py")


def test_folder_to_shards(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for sample in colour_samples(5):
        sample.image.save(photos / f"img{sample.key}.png")
        (photos / f"img{sample.key}.txt").write_text(sample.caption)
    (photos / "orphan.jpg").write_bytes(b"no caption beside me")
    done = subprocess.run(
        [sys.executable, SCRIPT, "--folder", str(photos), "--out", str(tmp_path / "shards"), "--samples-per-shard", "2"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "orphan.jpg" in done.stderr
    urls = expand_shards(str(tmp_path / "shards" / "train-{00000..00002}.tar"), "shards")
    assert count_samples(urls) == 5
