"""scripts/make_shards.py turns captioned images (a folder, CSV or JSONL) into shards the data module reads."""

import importlib.util
import io
import json
import os
import sys

from helpers import colour_samples
from PIL import Image

from clip_train.data.bad_data import BadSampleCounter
from clip_train.data.shard_reader import shard_samples
from clip_train.data.shards import count_samples, expand_shards

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "scripts", "make_shards.py")


def run_in_process(monkeypatch, *args: str) -> None:
    """The script's main() in this process (it spares the seconds of importing torch again); its pool forks from here."""
    spec = importlib.util.spec_from_file_location("make_shards", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_shards", module)  # worker processes find the job function by this name
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["make_shards.py", *args])
    module.main()


def test_folder_to_shards(tmp_path, monkeypatch, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for sample in colour_samples(5):
        sample.image.save(photos / f"img{sample.key}.png")
        (photos / f"img{sample.key}.txt").write_text(sample.caption)
    (photos / "orphan.jpg").write_bytes(b"no caption beside me")
    run_in_process(monkeypatch, "--folder", str(photos), "--out", str(tmp_path / "shards"), "--shard-size", "2")
    assert "orphan.jpg: no orphan.txt beside it" in capsys.readouterr().err
    urls = expand_shards(str(tmp_path / "shards" / "train-{00000..00002}.tar"), "shards")
    assert count_samples(urls) == 5


def test_jsonl_with_resizing_workers_and_a_report_of_unreadable_inputs(tmp_path, monkeypatch, capsys):
    images = tmp_path / "images"
    images.mkdir()
    lines = []
    for index, sample in enumerate(colour_samples(5)):
        sample.image.save(images / f"{index}.jpg")
        lines.append({"image": f"images/{index}.jpg", "caption": sample.caption})
    Image.new("RGB", (300, 120), (10, 200, 10)).save(images / "wide.png")
    lines.append({"image": "images/wide.png", "caption": "a wide green band"})
    Image.new("RGB", (40, 40), (200, 10, 10)).save(images / "red.bmp")
    lines.append({"image": "images/red.bmp", "caption": "a red bitmap"})
    jpeg = (images / "0.jpg").read_bytes()
    (images / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    lines.append({"image": "images/cut.jpg", "caption": "a truncated download"})
    (images / "page.jpg").write_bytes(b"<html>404</html>")
    lines.append({"image": "images/page.jpg", "caption": "an error page"})
    lines.append({"image": "images/absent.jpg", "caption": "a missing file"})
    lines.append({"image": "images/1.jpg", "caption": "  "})
    text = "\n".join(json.dumps(line) for line in lines) + "\n{not json}\n"
    (tmp_path / "pairs.jsonl").write_text(text)
    out = tmp_path / "shards"
    jsonl = str(tmp_path / "pairs.jsonl")
    run_in_process(monkeypatch, "--jsonl", jsonl, "--out", str(out), "--shard-size", "3", "--max-size", "64", "--workers", "2")
    stderr = capsys.readouterr().err
    assert "skipped 5 unreadable inputs" in stderr and "12 inputs, 5 skipped" in stderr
    with open(out / "sizes.json") as f:
        assert json.load(f) == {"train-00000.tar": 3, "train-00001.tar": 3, "train-00002.tar": 1}
    report = dict(line.split("\t") for line in (out / "skipped.tsv").read_text().splitlines())
    assert {os.path.basename(path) for path in report} == {"cut.jpg", "page.jpg", "absent.jpg", "1.jpg", "pairs.jsonl:12"}
    assert report[str(images / "absent.jpg")] == "image file not found" and report[str(images / "1.jpg")] == "empty caption"

    counter = BadSampleCounter()
    urls = expand_shards(str(out / "train-{00000..00002}.tar"), "shards")
    read = [sample for sample in shard_samples(({"url": url} for url in urls), counter)]
    assert counter.bad == 0 and [s["__key__"] for s in read] == [f"{i:09d}" for i in range(7)]
    assert [s["txt"].decode() for s in read] == [line["caption"] for line in lines[:7]]
    wide, bitmap = (Image.open(io.BytesIO(s.get("png") or s.get("jpg"))) for s in read[5:7])
    assert wide.size == (64, 26) and wide.format == "PNG"  # 300x120 scaled by 64/300, aspect kept
    assert bitmap.size == (40, 40) and bitmap.format == "JPEG"  # not jpg/png/webp: re-encoded, small enough to keep its size
    assert read[0]["jpg"] == (images / "0.jpg").read_bytes()  # small images in a shard format are copied byte for byte


def test_max_size_shrinks_the_longer_side_of_a_jpeg_and_keeps_it_jpeg(tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (120, 300), (200, 120, 40)).save(photos / "tall.jpg", quality=95)
    Image.new("RGB", (80, 60), (40, 120, 200)).save(photos / "small.jpg", quality=95)
    for name in ("tall", "small"):
        (photos / f"{name}.txt").write_text(f"a {name} picture")
    out = tmp_path / "shards"
    run_in_process(monkeypatch, "--folder", str(photos), "--out", str(out), "--max-size", "100")
    small, tall = shard_samples([{"url": str(out / "train-00000.tar")}], BadSampleCounter())  # the folder's order
    image = Image.open(io.BytesIO(tall["jpg"]))
    assert image.format == "JPEG" and image.size == (40, 100)  # the longer side to 100, the aspect kept
    assert small["jpg"] == (photos / "small.jpg").read_bytes()  # within the limit: copied, never enlarged
