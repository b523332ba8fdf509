"""Every kind of source yields the samples a tar shard gives: tables (CSV, TSV, JSONL, parquet), image folders with
caption files, and Hugging Face datasets saved with `save_to_disk` (written here by `datasets` itself)."""

import io
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import colour_samples

from clip_train.data.bad_data import BadSampleCounter
from clip_train.data.pipeline import decode_pair
from clip_train.data.shard_writer import write_shards
from clip_train.data.source_kinds import ColumnKeys, row_source_units, source_kind, unit_samples


def _png(image) -> bytes:
    data = io.BytesIO()
    image.save(data, format="PNG")
    return data.getvalue()


def _pairs(units: list[str]) -> list[tuple[str, tuple]]:
    """(caption, image shape) of every sample of `units`, decoded as the pipeline decodes them."""
    counter = BadSampleCounter()
    pairs = [decode_pair(sample, counter) for sample in unit_samples(({"url": u} for u in units), counter)]
    return [(caption, tuple(image.shape)) for image, caption, _ in filter(None, pairs)], counter


def _tar_pairs(samples) -> list[tuple[str, tuple]]:
    return sorted((s.caption, (3, s.image.height, s.image.width)) for s in samples)


@pytest.fixture
def samples():
    return colour_samples(7)


def test_tables_of_every_format_yield_the_pairs_with_openclips_default_columns(tmp_path, samples):
    os.makedirs(tmp_path / "images")
    for s in samples:
        s.image.save(tmp_path / "images" / f"{s.key}.png")
    rows = [{"filepath": f"images/{s.key}.png", "title": s.caption} for s in samples]  # relative to the table
    with open(tmp_path / "pairs.csv", "w") as f:  # OpenCLIP's default separator is a tab, even in a .csv
        f.write("filepath\ttitle\n" + "".join(f"{r['filepath']}\t{r['title']}\n" for r in rows))
    (tmp_path / "pairs.tsv").write_text((tmp_path / "pairs.csv").read_text())
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.table({"jpg": [_png(s.image) for s in samples], "caption": [s.caption for s in samples]}),
                   tmp_path / "bytes.parquet")  # fmt: skip
    expected = _tar_pairs(samples)
    for name, keys in (("pairs.csv", ColumnKeys()), ("pairs.tsv", ColumnKeys()), ("pairs.jsonl", ColumnKeys()),
                       ("bytes.parquet", ColumnKeys("jpg", "caption"))):  # fmt: skip
        path = str(tmp_path / name)
        assert source_kind(path) == "table"
        units, sizes = row_source_units(path, "table", "data.train", keys, rows_per_unit=3)
        assert sizes == [3, 3, 1] and len(units) == 3
        pairs, counter = _pairs(units)
        assert sorted(pairs) == expected, name
        assert counter.bad == 0
    with pytest.raises(ValueError, match=r"not 'image' and 'title'.*data.img_key"):
        row_source_units(str(tmp_path / "pairs.jsonl"), "table", "data.train", ColumnKeys(img_key="image"))


def test_a_missing_image_is_counted_and_a_comma_csv_reads_with_its_separator(tmp_path, samples):
    samples[0].image.save(tmp_path / "a.png")
    (tmp_path / "pairs.csv").write_text("filepath,title\na.png,a red square\ngone.png,a lost square\n")
    units, sizes = row_source_units(str(tmp_path / "pairs.csv"), "table", "data.train", ColumnKeys(separator=","))
    pairs, counter = _pairs(units)
    assert sizes == [2] and [caption for caption, _ in pairs] == ["a red square"]
    assert counter.counts[1:4] == [0, 0, 1]  # missing_image, named in the log with why


def test_an_image_folder_pairs_images_with_their_caption_files_at_any_depth(tmp_path, samples):
    for index, s in enumerate(samples):
        folder = tmp_path / "photos" / f"part{index % 2}"
        os.makedirs(folder, exist_ok=True)
        s.image.save(folder / f"{s.key}.jpg", quality=95)
        (folder / f"{s.key}.txt").write_text(s.caption + "\n")
    samples[0].image.save(tmp_path / "photos" / "uncaptioned.png")
    path = str(tmp_path / "photos")
    assert source_kind(path) == "folder"
    units, sizes = row_source_units(path, "folder", "data.train", rows_per_unit=4)
    assert sizes == [4, 3]
    pairs, _ = _pairs(units)
    assert sorted(pairs) == _tar_pairs(samples)


def test_a_saved_hugging_face_dataset_is_read_without_datasets(tmp_path, samples):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    dataset = datasets.Dataset.from_dict({"image": [s.image for s in samples], "text": [s.caption for s in samples]},
                                         features=features)  # fmt: skip
    dataset.save_to_disk(str(tmp_path / "hf"), num_shards=2)
    datasets.DatasetDict({"train": dataset}).save_to_disk(str(tmp_path / "hf_dict"))
    assert source_kind(str(tmp_path / "hf")) == "hf"
    units, sizes = row_source_units(str(tmp_path / "hf"), "hf", "data.train", rows_per_unit=3)
    assert sizes == [3, 1, 3]  # two Arrow files of 4 and 3 rows, each cut into units of at most 3
    pairs, _ = _pairs(units)
    assert sorted(pairs) == _tar_pairs(samples)
    with pytest.raises(ValueError, match="DatasetDict: name one of its splits.*hf_dict/train"):
        source_kind(str(tmp_path / "hf_dict"))


def test_tar_shards_pass_through_unchanged(tmp_path, samples):
    write_shards(str(tmp_path), "train", samples, samples_per_shard=4)
    assert source_kind(str(tmp_path / "train-{00000..00001}.tar")) == "shards"
    pairs, _ = _pairs([str(tmp_path / "train-00000.tar"), str(tmp_path / "train-00001.tar")])
    assert sorted(c for c, _ in pairs) == sorted(s.caption for s in samples)
