"""Bad rows in every kind of row source are skipped and counted by kind, as bad samples in tars are; a missing
column is refused at start-up, naming the columns there are; kinds mix in data.sources; evaluation reads a CSV."""

import os

import pytest
import torch
from helpers import colour_samples, make_datamodule, png_bytes, rank_loader, tiny_clip_model, write_source

from clip_train.data.bad_data import BAD_KINDS, BadSampleCounter
from clip_train.data.pipeline import decode_pair
from clip_train.data.shard_writer import Sample, write_shards
from clip_train.data.source_kinds import row_source_units, source_kind, unit_samples
from clip_train.eval.compositional import CompositionalTask


def read_all(path: str) -> tuple[list[str], dict[str, int]]:
    """(the captions decoded, {bad kind: count}) of every unit of the source at `path`, as the pipeline decodes."""
    units, _ = row_source_units(path, source_kind(path), "data.train", rows_per_unit=4)
    counter = BadSampleCounter()
    pairs = [decode_pair(sample, counter) for sample in unit_samples(({"url": u} for u in units), counter)]
    return sorted(caption for _, caption, _ in filter(None, pairs)), {k: n for k, n in zip(BAD_KINDS, counter.counts) if n}


@pytest.fixture
def good():
    return [Sample(s.key, s.image, f"{s.caption} {i}", {}) for i, s in enumerate(colour_samples(6, size=8))]


def test_a_csv_counts_a_missing_image_file_one_that_is_no_image_and_an_empty_caption(tmp_path, good):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "notes.png").write_text("not a picture")
    bad = [{"filepath": "images/gone.png", "title": "a lost square"}, {"filepath": "images/notes.png", "title": "notes"},
           {"filepath": f"images/{good[0].key}.png", "title": ""}]  # fmt: skip
    captions, counts = read_all(write_source("csv", tmp_path, good, rows=bad))
    assert captions == sorted(s.caption for s in good)
    assert counts == {"missing_image": 1, "not_image": 1, "empty_caption": 1}


def test_jsonl_lines_that_cannot_be_read_are_counted_not_fatal(tmp_path, good):
    bad = ["this line is no JSON", "[1, 2]", {"title": "a row without an image column"},
           {"filepath": "images/gone.png", "title": "a lost square"},
           {"filepath": f"images/{good[1].key}.png", "title": "  "}]  # fmt: skip
    captions, counts = read_all(write_source("jsonl", tmp_path, good, rows=bad))
    assert captions == sorted(s.caption for s in good)
    assert counts == {"unreadable_row": 3, "missing_image": 1, "empty_caption": 1}


def test_parquet_counts_a_null_image_undecodable_bytes_and_an_empty_caption(tmp_path, good):
    bad = [{"filepath": None, "title": "no image"}, {"filepath": b"<html>404</html>", "title": "an error page"},
           {"filepath": png_bytes(good[2].image), "title": None}]  # fmt: skip
    captions, counts = read_all(write_source("parquet", tmp_path, good, rows=bad))
    assert captions == sorted(s.caption for s in good)
    assert counts == {"missing_image": 1, "not_image": 1, "empty_caption": 1}


def test_a_folder_counts_an_image_or_caption_gone_after_start_up_and_a_blank_caption(tmp_path, good):
    path = write_source("folder", tmp_path, good)
    units, _ = row_source_units(path, "folder", "data.train", rows_per_unit=4)
    os.remove(os.path.join(path, f"{good[0].key}.png"))
    os.remove(os.path.join(path, f"{good[1].key}.txt"))
    with open(os.path.join(path, f"{good[2].key}.txt"), "w") as f:
        f.write(" \n")
    counter = BadSampleCounter()
    pairs = [decode_pair(sample, counter) for sample in unit_samples(({"url": u} for u in units), counter)]
    assert sorted(caption for _, caption, _ in filter(None, pairs)) == sorted(s.caption for s in good[3:])
    assert {k: n for k, n in zip(BAD_KINDS, counter.counts) if n} == {"missing_image": 1, "unreadable_row": 1,
                                                                      "empty_caption": 1}  # fmt: skip


def test_a_hugging_face_dataset_counts_a_null_image_undecodable_bytes_and_an_empty_text(tmp_path, good):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    images = [s.image for s in good] + [None, {"bytes": b"<html>404</html>", "path": None}, good[0].image]
    texts = [s.caption for s in good] + ["no image", "an error page", ""]
    datasets.Dataset.from_dict({"image": images, "text": texts}, features=features).save_to_disk(str(tmp_path / "hf"))
    captions, counts = read_all(str(tmp_path / "hf"))
    assert captions == sorted(s.caption for s in good)
    assert counts == {"missing_image": 1, "not_image": 1, "empty_caption": 1}


@pytest.mark.parametrize("form", ["csv", "jsonl", "parquet", "hf"])
def test_a_missing_column_is_refused_at_start_up_naming_the_columns_there_are(tmp_path, good, form):
    path = write_source(form, tmp_path, good)
    present = "'image', 'text'" if form == "hf" else "'filepath', 'title'"
    with pytest.raises(ValueError, match=rf"has the columns \[{present}\], not .*'caption'"):
        make_datamodule(path, caption_key="caption" if form != "hf" else None, img_key="caption" if form == "hf" else None)


def test_a_csv_a_folder_a_dataset_and_tar_shards_mix_in_data_sources_each_sample_once_per_epoch(tmp_path):
    """Four kinds in one data.sources list (no weights, no resampling: one epoch reads each sample once), 32 samples
    in uneven units over 2 ranks × 2 workers. The table's keys are its row numbers 0-7, the folder's and the shards'
    their samples' (8-13, 24-31), the dataset's its files' rows: all distinct."""
    samples = [Sample(f"{i:09d}", s.image, f"{s.caption} {i}", {}) for i, s in enumerate(colour_samples(32, size=8))]
    csv = write_source("csv", tmp_path / "csv", samples[:8])
    folder = write_source("folder", tmp_path / "folder", samples[8:14])
    hf = write_source("hf", tmp_path / "hf", samples[14:24])
    write_shards(str(tmp_path / "tars"), "train", samples[24:], samples_per_shard=5)
    tars = str(tmp_path / "tars" / "train-{00000..00001}.tar")
    datamodule = make_datamodule(None, sources=[{"shards": path} for path in (csv, folder, hf, tars)], batch_size=4,
                                 num_workers=2, image_size=8, rows_per_unit=3)  # fmt: skip
    assert datamodule.samples_per_epoch == 32
    hf_keys = [s["__key__"] for s in unit_samples(({"url": u} for u in datamodule.sources[2].urls), BadSampleCounter())]
    seen = [key for rank in (0, 1) for batch in rank_loader(datamodule, rank, 2, training=True) for key in batch["key"]]
    expected = [f"{i:09d}" for i in [*range(14), *range(24, 32)]] + hf_keys
    assert sorted(seen) == sorted(expected) and len(set(expected)) == 32


@torch.no_grad()
def test_the_compositional_task_reads_a_csv_as_it_reads_the_same_pairs_in_tar_shards(tmp_path):
    """Captions with two attributes, so every negative kind applies to some: the task's accuracies on the CSV equal
    those on tar shards of the same images and captions (`tests/test_compositional.py` checks the shards' by hand)."""
    words = [("red", "square"), ("blue", "circle"), ("green", "triangle"), ("yellow", "square")]
    samples = [Sample(f"{i:09d}", s.image, f"a {words[i % 4][0]} {words[i % 4][1]} left of a {words[(i + 1) % 4][0]} "
                      f"{words[(i + 1) % 4][1]}", {}) for i, s in enumerate(colour_samples(8))]  # fmt: skip
    csv = write_source("csv", tmp_path / "csv", samples)
    write_shards(str(tmp_path / "tars"), "val", samples, samples_per_shard=4)
    model = tiny_clip_model()
    from_csv = CompositionalTask(shards=csv, batch_size=3).run(model, 0, 1)
    from_tars = CompositionalTask(shards=str(tmp_path / "tars" / "val-{00000..00001}.tar"), batch_size=5).run(model, 0, 1)
    assert from_csv and from_csv == pytest.approx(from_tars)
