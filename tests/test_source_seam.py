"""A new kind of source is one file plus one config, with nothing in clip_train edited: the zip kind of docs/data.md
"Adding a source", taken from that page and written outside clip_train by this test, reads every pair once per
epoch over 2 ranks × 2 workers and resumes exactly; the kinds clip_train ships are built from their configs alike."""

import json
import os
import re
import sys
import zipfile
from collections import Counter

import pytest
from helpers import colour_samples, keys, make_datamodule, png_bytes, rank_loader, write_source
from hydra.utils import instantiate

from clip_train.build import build_datamodule
from clip_train.data.bad_data import BAD_KINDS
from clip_train.data.position import position_state
from clip_train.data.row_source import build_kind, kind_class, shipped_kinds
from clip_train.data.source_kinds import source_kind
from clip_train.eval.synthetic_sets import write_class_folders

DOCS = os.path.join(os.path.dirname(__file__), "..", "docs", "data.md")


def adding_a_source() -> tuple[str, str]:
    """(the Python file, the config) that docs/data.md's "Adding a source" shows."""
    with open(DOCS) as f:
        section = f.read().split("\n## Adding a source\n", 1)[1]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)[0], re.findall(r"```yaml\n(.*?)```", section, flags=re.S)[0]


@pytest.fixture
def zip_kind(tmp_path, monkeypatch):
    """zip_pairs.py importable (as on the PYTHONPATH) and my_configs/data/kind/zip.yaml; returns my_configs."""
    code, config = adding_a_source()
    (tmp_path / "kinds").mkdir()
    (tmp_path / "kinds" / "zip_pairs.py").write_text(code)
    (tmp_path / "my_configs" / "data" / "kind").mkdir(parents=True)
    (tmp_path / "my_configs" / "data" / "kind" / "zip.yaml").write_text(config)
    monkeypatch.syspath_prepend(str(tmp_path / "kinds"))
    yield tmp_path / "my_configs"
    sys.modules.pop("zip_pairs", None)


def write_zip(path, samples, absent: tuple[str, ...] = ()) -> str:
    """KEY.png members and captions.json; the `absent` members are captioned but not in the archive."""
    captions = {f"{s.key}.png": s.caption for s in samples} | {name: "a lost square" for name in absent}
    with zipfile.ZipFile(path, "w") as archive:
        for s in samples:
            archive.writestr(f"{s.key}.png", png_bytes(s.image))
        archive.writestr("captions.json", json.dumps(captions))
    return str(path)


def test_a_kind_from_its_own_file_and_config_reads_each_pair_once_per_epoch_and_resumes_exactly(
    tmp_path, zip_kind, compose_config
):
    """40 pairs in units of 7, batches of 4 on 2 ranks × 2 workers: 5 batches per rank cover every pair once; resuming
    epoch 1 after 3 batches gives each rank the rest of its uninterrupted epoch."""
    archive = write_zip(tmp_path / "pairs.zip", colour_samples(40, size=8))
    cfg = compose_config(
        "model=test", "data=webdataset", f"hydra.searchpath=[file://{zip_kind}]", "data/kind=zip", f"data.train={archive}",
        "data.rows_per_unit=7", "data.batch_size=4", "data.num_workers=2", "data.tokenizer_vocab_size=300",
    )  # fmt: skip
    datamodule = build_datamodule(cfg)
    assert type(datamodule._expand.keywords["kind"]).__module__ == "zip_pairs"  # the data module got the built kind
    assert datamodule.train_urls[0].startswith(f"zip_pairs.ZipPairs:{archive}?captions=captions.json#0:7")
    assert datamodule.train_shard_sizes == [7, 7, 7, 7, 7, 5]
    epochs = {}
    for epoch in (0, 1):
        datamodule.set_epoch(epoch)
        epochs[epoch] = [[list(b["key"]) for b in rank_loader(datamodule, rank, 2, training=True)] for rank in (0, 1)]
        seen = Counter(int(key) for batches in epochs[epoch] for batch in batches for key in batch)
        assert [len(b) for b in epochs[epoch]] == [5, 5] and sorted(seen) == list(range(40)) and set(seen.values()) == {1}
    datamodule.load_state_dict(position_state(1, 3, datamodule.layout))
    for rank in (0, 1):
        assert [list(b["key"]) for b in rank_loader(datamodule, rank, 2, training=True)] == epochs[1][rank][3:]


def test_a_kind_named_by_its_class_path_reads_and_counts_a_row_it_cannot_read(tmp_path, zip_kind):
    archive = write_zip(tmp_path / "pairs.zip", colour_samples(12, size=8), absent=("000000005a.png",))
    datamodule = make_datamodule(archive, archive, kind="zip_pairs.ZipPairs", rows_per_unit=5, image_size=8)
    batches = list(rank_loader(datamodule, 0, 1, training=False))
    assert sorted(keys(batches)) == list(range(12))
    bad = sum(batch["bad_samples"] for batch in batches)
    assert {kind: int(n) for kind, n in zip(BAD_KINDS, bad) if n} == {"unreadable_row": 1}


@pytest.mark.parametrize("name", shipped_kinds())
def test_every_shipped_kind_config_builds_the_kind_its_name_infers_and_reads(tmp_path, compose_config, name):
    """data/kind=NAME builds the same kind as data.kind=NAME (the config's options are the class defaults), the
    kind inferred from a path of that kind (`classes` is named, never inferred: an ImageFolder of classes is a
    folder of images); a source of it reads through the composed data module."""
    if name == "classes":
        source = write_class_folders("colours", str(tmp_path), per_class=1, image_size=8)  # 8 colours, 1 image each
    else:
        source = write_source({"table": "csv", "folder": "folder", "hf": "hf"}[name], tmp_path, colour_samples(8, size=8))
    cfg = compose_config("model=test", "data=webdataset", f"data/kind={name}", f"data.train={source}",
                         "data.batch_size=4", "data.num_workers=0", "data.tokenizer_vocab_size=300")  # fmt: skip
    kind = instantiate(cfg.data.kind)
    assert isinstance(kind, kind_class(name)) and kind == build_kind(name)
    assert (source_kind(source) == name) == (name != "classes")
    datamodule = build_datamodule(cfg)
    assert sum(len(batch["key"]) for batch in rank_loader(datamodule, 0, 1, training=True)) == 8


@pytest.mark.parametrize(
    ("kind", "message"),
    [("zip", r"data.kind='zip' is neither shards, one of classes, folder, hf, table"),
     ("zip_parts.ZipPairs", "cannot import zip_parts"),
     ("json.JSONDecoder", "nor the dotted path of a clip_train.data.row_source.RowSource class")],
)  # fmt: skip
def test_a_kind_that_names_no_row_source_is_refused_at_start_up(tmp_path, kind, message):
    archive = write_zip(tmp_path / "pairs.zip", colour_samples(4, size=8))
    with pytest.raises(ValueError, match=message):
        make_datamodule(archive, kind=kind)
