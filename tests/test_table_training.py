"""Training on data that is not tar shards: a CSV of image paths and captions (OpenCLIP's layout), validated on
its own table, read exactly once per epoch, resumed mid-epoch exactly, mixed with tar shards, and evaluated."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from faults import read_lines
from helpers import colour_samples, tiny_clip_model

from clip_train.data.shard_writer import Sample, write_shards
from clip_train.eval.retrieval import RetrievalTask
from clip_train.train import run

TESTS = os.path.dirname(__file__)
ROWS = [f"{i:09d}" for i in range(40)]  # a table's sample keys are its row numbers


def write_table(folder, samples, name: str) -> str:
    """images/KEY.png and NAME.csv (tab-separated `filepath`, `title`, paths relative to the table)."""
    os.makedirs(folder / "images", exist_ok=True)
    lines = ["filepath\ttitle"]
    for s in samples:
        s.image.save(folder / "images" / f"{s.key}.png")
        lines.append(f"images/{s.key}.png\t{s.caption}")
    (folder / f"{name}.csv").write_text("\n".join(lines) + "\n")
    return str(folder / f"{name}.csv")


def _command(run_dir, train: str, *overrides: str) -> list[str]:
    return [
        sys.executable, "-m", "clip_train", "model=test", "data=webdataset", f"data.train={train}",
        "data.batch_size=5", "data.num_workers=2", "data.shuffle_buffer=8", "data.tokenizer_vocab_size=300",
        "trainer.accelerator=cpu", "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false", "logger=[]",
        f"hydra.run.dir={run_dir}", "+callbacks.log._target_=faults.BatchLog", f"+callbacks.log.path={run_dir}/batches.jsonl",
        *overrides,
    ]  # fmt: skip


def _run(command: list[str]) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_a_csv_trains_once_per_epoch_validates_on_its_own_table_and_resumes_exactly(tmp_path):
    """40 rows in units of 10, batches of 5: an epoch is 8 steps. SIGTERM after step 3 saves mid-epoch; the same
    command resumes and the two runs together see every row exactly once in each of the 2 epochs."""
    train = write_table(tmp_path / "data", colour_samples(40), "train")
    val = write_table(tmp_path / "data", colour_samples(10, start=500), "val")
    command = _command(tmp_path / "run", train, "data.rows_per_unit=10", f"data.val={val}", "trainer.max_steps=16",
                       "trainer.val_check_interval=8", "+callbacks.term._target_=faults.SignalAt", "+callbacks.term.step=3",
                       "+callbacks.term.signal=SIGTERM")  # fmt: skip
    stopped = _run(command)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    resumed = _run(command)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    steps = read_lines(tmp_path / "run" / "batches.jsonl")
    assert [r["step"] for r in steps] == [1, 2, 3, *range(5, 17)]  # step 4's batch was trained on before the save
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0 <= metrics["val/image_to_text_R@1"] <= 1 and not any(k.startswith("zeroshot/") for k in metrics)
    uninterrupted = _run(_command(tmp_path / "straight", train, "data.rows_per_unit=10", "trainer.max_steps=16",
                                  "trainer.limit_val_batches=0"))  # fmt: skip
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    straight = read_lines(tmp_path / "straight" / "batches.jsonl")
    for epoch in (0, 1):
        keys = [key for r in straight if r["epoch"] == epoch for key in r["keys"]]
        assert sorted(keys) == ROWS, f"epoch {epoch}: a row repeated or skipped"
    expected = {r["step"]: r["keys"] for r in straight}
    assert all(r["keys"] == expected[r["step"]] for r in steps)  # the resumed stream is the uninterrupted one


@pytest.mark.slow
def test_a_table_and_tar_shards_mix_by_weight_and_a_table_is_evaluated(tmp_path, compose_config):
    train = write_table(tmp_path / "data", colour_samples(40), "train")
    write_shards(str(tmp_path / "shards"), "train", colour_samples(40, start=1000), samples_per_shard=10)
    shards = f"{tmp_path}/shards/train-{{00000..00003}}.tar"
    sources = f"data.sources=[{{shards: '{train}', weight: 1}}, {{shards: '{shards}', weight: 1}}]"
    metrics = run(compose_config(
        "model=test", sources, "data.resampled=true", "data.rows_per_unit=10", "data.batch_size=8", "data.num_workers=0",
        "data.tokenizer_vocab_size=300", "trainer.max_steps=6", "trainer.num_sanity_val_steps=0", "logger=[]",
        "+callbacks.log._target_=faults.BatchLog", f"+callbacks.log.path={tmp_path}/batches.jsonl",
    ))  # fmt: skip
    keys = [key for r in read_lines(tmp_path / "batches.jsonl") for key in r["keys"]]
    from_table = sum(key in ROWS for key in keys)
    assert metrics["train/samples_seen"] == 48 and 0 < from_table < 48  # both sources are drawn


@torch.no_grad()
def test_retrieval_reads_a_table_as_it_reads_shards(tmp_path):
    samples = [Sample(s.key, s.image, f"{s.caption} number {i}", {}) for i, s in enumerate(colour_samples(12))]
    for index, s in enumerate(samples):  # a mark per image and a number per caption, so that nothing ties
        s.image.paste((255, 255, 255), (2 * index, 0, 2 * index + 3, 3))
    table = write_table(tmp_path, samples, "pairs")
    model = tiny_clip_model()
    got = RetrievalTask(table).run(model, 0, 1)
    pixels = [model.preprocess_encoded((tmp_path / "images" / f"{s.key}.png").read_bytes()) for s in samples]
    images = torch.cat([model.encode_pixels(p[None]) for p in pixels]).float()
    texts = model.encode_text([s.caption for s in samples])
    image_hits = [float(int((texts @ image).argmax()) == i) for i, image in enumerate(images)]
    text_hits = [float(int((images @ text).argmax()) == i) for i, text in enumerate(texts)]
    assert got["image_to_text_R@1"] == pytest.approx(sum(image_hits) / len(samples))
    assert got["text_to_image_R@1"] == pytest.approx(sum(text_hits) / len(samples))


def _write_source(kind: str, folder, samples) -> str:
    """The same samples as a CSV, an image folder with caption files, or a Hugging Face dataset saved to disk."""
    if kind == "table":
        return write_table(folder, samples, "train")
    if kind == "folder":
        os.makedirs(folder / "photos")
        for s in samples:
            s.image.save(folder / "photos" / f"{s.key}.png")
            (folder / "photos" / f"{s.key}.txt").write_text(s.caption)
        return str(folder / "photos")
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    rows = {"image": [s.image for s in samples], "text": [s.caption for s in samples]}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(folder / "hf"), num_shards=3)
    return str(folder / "hf")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["table", "folder", "hf"])
def test_every_kind_reads_each_sample_once_per_epoch_on_2_ranks_of_2_workers(tmp_path, kind):
    """40 samples in uneven units (rows_per_unit=7; the Hugging Face folder's 3 files of 14, 13, 13 rows cut again),
    batches of 5 on 2 DDP processes with 2 workers each: an epoch is 4 steps and reads every sample exactly once."""
    samples = [Sample(f"{i:09d}", s.image, f"{s.caption} {i}", {}) for i, s in enumerate(colour_samples(40))]
    source = _write_source(kind, tmp_path / "data", samples)
    done = _run(_command(tmp_path / "run", source, "data.rows_per_unit=7", "trainer=ddp", "trainer.devices=2",
                         "trainer.max_steps=8", "trainer.limit_val_batches=0"))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_lines(tmp_path / "run" / "batches.jsonl")
    assert sorted({(r["rank"], r["step"]) for r in records}) == [(rank, step) for rank in (0, 1) for step in range(1, 9)]
    captions_by_key = {s.key: s for s in samples}
    for epoch in (0, 1):
        keys = sorted(key for r in records if r["epoch"] == epoch for key in r["keys"])
        assert len(keys) == 40 and len(set(keys)) == 40, f"epoch {epoch}: a sample repeated or skipped"
        assert kind != "table" or keys == sorted(captions_by_key)  # a table's keys are its row numbers
