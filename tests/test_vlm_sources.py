"""The VLM's conversations through the data seam: LLaVA JSON, JSONL, parquet and tar shards read once per epoch over
2 ranks × 2 workers, a resumed 2-worker stage equal to an uninterrupted one, bad records skipped and counted by the
run, and a bad path or field refused at start-up by name."""

import csv
import io
import json
import math
import multiprocessing
import os
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image
from tiny_vlm import WORDS, StopAfter, tiny_vlm
from torch.utils.data import DataLoader

from clip_train.data.position import ResumePoint
from clip_train.data.transforms import CLIP_MEAN, CLIP_STD, eval_transform
from clip_train.paths import CONFIG_DIR
from clip_train.vlm.conversation_source import ConversationSource, read_conversations
from clip_train.vlm.conversation_stream import ConversationStream, PadConversations
from clip_train.vlm.run import run
from clip_train.vlm.stages import train_stage
from clip_train.vlm.text import build_word_tokenizer

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}
CPU = {"accelerator": "cpu", "enable_progress_bar": False}


def _png(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), COLOURS[colour]).save(buffer, format="PNG")
    return buffer.getvalue()


def _turns(colour: str) -> list[dict]:
    return [{"from": "human", "value": "<image>\nwhat color is the square?"}, {"from": "gpt", "value": colour}]


def _colour(index: int) -> str:
    return list(COLOURS)[index % 3]


def _records(folder, count: int) -> list[dict]:
    """`count` LLaVA records with ids 000000000..., their images written under `folder`/images."""
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    records = []
    for index in range(count):
        key = f"{index:09d}"
        with open(os.path.join(folder, "images", f"{key}.png"), "wb") as f:
            f.write(_png(_colour(index)))
        records.append({"id": key, "image": f"images/{key}.png", "conversations": _turns(_colour(index))})
    return records


def _write(form: str, folder, count: int) -> str:
    """`count` conversations as `form`: a LLaVA .json list, .jsonl, a parquet of image bytes, or 3 tar shards."""
    if form in ("json", "jsonl"):
        records = _records(folder, count)
        path = os.path.join(folder, f"train.{form}")
        with open(path, "w") as f:
            f.write(json.dumps(records) if form == "json" else "".join(json.dumps(r) + "\n" for r in records))
        return path
    if form == "parquet":
        columns = {
            "image": [_png(_colour(i)) for i in range(count)],
            "conversations": [_turns(_colour(i)) for i in range(count)],
        }
        path = os.path.join(folder, "train.parquet")
        pq.write_table(pa.table(columns), path)
        return path
    shards = 3
    for shard in range(shards):
        with tarfile.open(os.path.join(folder, f"{shard:05d}.tar"), "w") as tar:
            for index in range(shard, count, shards):
                record = json.dumps({"conversations": _turns(_colour(index))}).encode()
                for name, data in ((f"{index:09d}.png", _png(_colour(index))), (f"{index:09d}.json", record)):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return os.path.join(str(folder), f"{{00000..{shards - 1:05d}}}.tar")


def _epoch(source: ConversationSource, rank: int, world: int, epoch: int, batch_size: int = 3) -> list[str]:
    """The record keys rank `rank` of `world` reads in `epoch`, with 2 DataLoader workers."""
    stream = ConversationStream(
        source.units, source.sizes, rank=rank, world=world, batch_size=batch_size,
        batches_per_rank=math.ceil(source.records / (batch_size * world)), seed=0, shuffle_buffer=4,
        epoch=multiprocessing.Value("i", epoch), resume_point=ResumePoint(),
        collate=PadConversations(build_word_tokenizer(WORDS), None),
    )  # fmt: skip
    return [key for batch in DataLoader(stream, batch_size=None, num_workers=2) for key in batch["key"]]


@pytest.mark.parametrize("form", ["json", "jsonl", "parquet", "tar"])
def test_every_record_is_read_once_per_epoch_over_two_ranks_and_two_workers(tmp_path, form):
    """24 records in uneven units of 5 (tars: 3 shards of 8), batches of 3: 2 ranks × 4 batches are one epoch."""
    source = ConversationSource.of(_write(form, tmp_path, 24), "data.train", rows_per_unit=5)
    expected = sorted(f"{index:09d}" for index in range(24))
    epochs = []
    for epoch in range(2):
        ranks = [_epoch(source, rank, 2, epoch) for rank in range(2)]
        assert len(ranks[0]) == len(ranks[1]) == 12
        assert sorted(ranks[0] + ranks[1]) == expected
        epochs.append(ranks[0] + ranks[1])
    assert epochs[0] != epochs[1]  # a new order each epoch


def test_a_table_conversation_arrives_as_the_records_own(tmp_path):
    """A parquet cell of turns reaches the stage as the same turns a LLaVA JSON record gives."""
    json_turns = [c.turns for c in read_conversations(ConversationSource.of(_write("json", tmp_path, 3), "t"))[0]]
    table_turns = [c.turns for c in read_conversations(ConversationSource.of(_write("parquet", tmp_path, 3), "t"))[0]]
    assert table_turns == json_turns and json_turns[1][0].answer == "green"


SETTINGS = OmegaConf.create(
    {
        "steps": 8,
        "lr": 3e-3,
        "weight_decay": 0.01,
        "warmup_steps": 1,
        "lm": "full",
        "lora_rank": 8,
        "checkpoint_every_n_steps": 3,
    }
)


def _stage(run_dir, data: str, callbacks=()) -> dict:
    model, tokenizer = tiny_vlm()
    source = ConversationSource.of(data, "data.train", rows_per_unit=5)
    train_stage("instruct", model, tokenizer, source, eval_transform(32, CLIP_MEAN, CLIP_STD), SETTINGS, CPU, str(run_dir),
                batch_size=2, num_workers=2, callbacks=callbacks, shuffle_buffer=4)  # fmt: skip
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.slow
def test_a_stage_resumed_mid_epoch_with_two_workers_equals_an_uninterrupted_one(tmp_path):
    """12 records, batches of 2: 6 per epoch; stopped after 3 (worker 1's turn next), resumed, on to 8 (epoch 2)."""
    data = _write("jsonl", tmp_path, 12)
    whole = _stage(tmp_path / "whole", data)
    _stage(tmp_path / "stopped", data, callbacks=[StopAfter(3)])
    assert torch.load(tmp_path / "stopped/instruct/checkpoints/last.ckpt", weights_only=False)["global_step"] == 3
    resumed = _stage(tmp_path / "stopped", data)
    start = tiny_vlm()[0].state_dict()
    assert any(not torch.allclose(whole[name], start[name]) for name in whole)
    for name in whole:
        torch.testing.assert_close(resumed[name], whole[name], msg=name)


def _config(tmp_path, *overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("vlm", overrides=[f"paths.output_dir={tmp_path}", *overrides])


@pytest.mark.slow
def test_a_corrupt_image_and_a_malformed_record_are_skipped_and_counted_by_the_run(trained_checkpoint, tmp_path):
    """12 good records and three bad ones (a truncated PNG, turns out of order, an image file gone) train 4 steps of
    3 records, one pass over the 15 (units of 100, so all are read before the first batch), and the test set's
    malformed record is left out of the scores; the old reader stopped the run at the first of them."""
    records = _records(tmp_path, 12)
    with open(tmp_path / "images/truncated.png", "wb") as f:
        f.write(_png("red")[:60])
    bad = [
        {"id": "truncated", "image": "images/truncated.png", "conversations": _turns("red")},
        {"id": "swapped", "image": records[0]["image"], "conversations": _turns("red")[::-1]},
        {"id": "gone", "image": "images/gone.png", "conversations": _turns("red")},
    ]
    for name, content in (("train", records[:5] + bad + records[5:]), ("test", records[:4] + bad[1:2])):
        (tmp_path / f"{name}.json").write_text(json.dumps(content))
    metrics = run(_config(
        tmp_path / "run", "stage=instruct", f"vision.checkpoint={trained_checkpoint}", f"data.captions={tmp_path}/train.json",
        f"data.train={tmp_path}/train.json", f"data.test={tmp_path}/test.json", "data.batch_size=3", "stages.instruct.steps=4",
        "trainer.log_every_n_steps=1", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
    ))  # fmt: skip
    saved = json.loads((tmp_path / "run/metrics.json").read_text())
    counts = {name: value for name, value in saved.items() if "bad_samples" in name}
    assert counts == {
        "instruct/bad_samples": 3.0, "instruct/bad_samples/corrupt_image": 1.0, "instruct/bad_samples/unreadable_row": 1.0,
        "instruct/bad_samples/missing_image": 1.0, "test/bad_samples": 1.0, "test/bad_samples/unreadable_row": 1.0,
    }  # fmt: skip
    assert 0 <= metrics["vqa/other"] == saved["vqa/mean"] <= 1  # 4 questions without question_types
    with open(tmp_path / "run/instruct/csv/metrics.csv") as f:
        logged = [row for row in csv.DictReader(f) if row.get("data/bad_samples")]
    assert float(logged[-1]["data/bad_samples"]) == 3 and float(logged[-1]["data/bad_samples/corrupt_image"]) == 1


def test_a_missing_file_is_refused_at_start_up_naming_the_key(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data.train: .*nowhere/train.json.* does not exist"):
        ConversationSource.of(str(tmp_path / "nowhere/train.json"), "data.train")


@pytest.mark.parametrize("form", ["json", "jsonl"])
def test_records_without_conversations_are_refused_naming_the_fields_they_have(tmp_path, form):
    path = tmp_path / f"train.{form}"
    records = [{"id": "1", "image": "a.png", "text": "a caption"}]
    path.write_text(json.dumps(records) if form == "json" else json.dumps(records[0]) + "\n")
    with pytest.raises(ValueError, match=r"no record has 'conversations' \(the records have \['id', 'image', 'text'\]\)"):
        ConversationSource.of(str(path), "data.train")


def test_a_table_without_the_columns_is_refused_naming_them_and_the_keys(tmp_path):
    pq.write_table(pa.table({"jpg": [_png("red")], "turns": [_turns("red")]}), tmp_path / "train.parquet")
    with pytest.raises(ValueError, match=r"columns \['jpg', 'turns'\], not 'image' and 'conversations': set data.img_key"):
        ConversationSource.of(str(tmp_path / "train.parquet"), "data.train")
    source = ConversationSource.of(str(tmp_path / "train.parquet"), "data.train", img_key="jpg", caption_key="turns")
    assert [c.turns[0].answer for c in read_conversations(source)[0]] == ["red"]


def test_a_json_file_that_is_no_list_is_refused(tmp_path):
    (tmp_path / "train.json").write_text(json.dumps({"image": "a.png"}))
    with pytest.raises(ValueError, match="holds a JSON list of records, not dict"):
        ConversationSource.of(str(tmp_path / "train.json"), "data.train")
