"""Where a stage's conversations come from: any source the data seam knows, read as LLaVA records.

    data.train=/data/llava_instruct_150k.json  data.image_folder=/data/coco/train2017   LLaVA's JSON list
    data.train=/data/instruct.jsonl                                                     one record a line
    data.train=/data/instruct.parquet, a saved Hugging Face dataset                     columns image, conversations
    data.train='/data/instruct/{00000..00099}.tar'                                      KEY.jpg + KEY.json (a record)

A `.json` or `.jsonl` file is read by `LlavaRecords`, a `RowSource` (`clip_train.data.row_source`) whose rows
are the records: its units name it by its dotted class path, so every DataLoader worker and resumed stage rebuilds
it from the unit alone. Any other path goes through the training kinds' inference (`source_kind`), a table or
dataset with the columns `data.img_key` (default `image`) and `data.caption_key` (`conversations`). Either way a
record reaches the stage as the sample a tar gives: its image bytes, and its conversation as JSON text (`txt`;
a tar's `json` member). `sample_conversation` turns such a sample into a `Conversation`, counting what it
skips by the trainer's bad-data kinds (`clip_train.data.bad_data`).

A missing file or a source without the image or conversations field stops the stage at start-up, naming the
option and the fields present; a single malformed record (not alternating human/gpt, no `<image>`, no JSON)
is skipped and counted as `unreadable_row`, an image file gone as `missing_image`, and undecodable bytes as
`corrupt_image` or `not_image`.
"""

import functools
import io
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image

from clip_train.data.bad_data import BAD_KINDS, BadDataPolicy, BadSampleCounter
from clip_train.data.deferred_decode import image_or_none
from clip_train.data.pipeline import IMAGE_EXTENSIONS
from clip_train.data.row_source import Row, RowSource, Unreadable
from clip_train.data.shards import expand_shards, is_remote, refuse_empty_shards, shard_sizes
from clip_train.data.source_kinds import ColumnKeys, unit_samples
from clip_train.vlm.conversations import Conversation, record_turns

log = logging.getLogger(__name__)
RECORD_SUFFIXES = (".json", ".jsonl")


@functools.lru_cache(maxsize=4)
def llava_records(path: str) -> tuple:
    """The records of a LLaVA `.json` list or `.jsonl` file, read once per process; a JSONL line that is no JSON
    is kept as the string saying why."""
    with open(path, encoding="utf-8") as f:
        if path.endswith(".json"):
            records = json.load(f)
            if not isinstance(records, list):
                raise ValueError(
                    f"{path}: a LLaVA conversation file holds a JSON list of records, not {type(records).__name__}"
                )
            return tuple(records)
        lines = [(number, line) for number, line in enumerate(f, start=1) if line.strip()]
    records = []
    for number, line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            records.append(f"line {number} is no JSON ({error})")
    return tuple(records)


@dataclass(frozen=True)
class LlavaRecords(RowSource):
    """LLaVA's conversation records in a `.json` list or a `.jsonl` file; `image` paths are relative to
    `image_folder` (None: the file's folder), as LLaVA's `--image_folder`. Keyed by each record's `id`, else
    its row."""

    image_folder: str | None = None

    def claims(self, path: str) -> bool:
        return path.endswith(RECORD_SUFFIXES)

    def parts(self, path: str) -> list[tuple[str, int]]:
        records = llava_records(path)
        fields = {key for record in records if isinstance(record, dict) for key in record}
        missing = [field for field in ("image", "conversations") if field not in fields]
        if records and missing:
            raise ValueError(
                f"{path}: no record has {' or '.join(repr(m) for m in missing)} (the records have {sorted(fields)}); "
                "LLaVA's format: {image, conversations: [{from: human, value}, {from: gpt, value}, ...]}"
            )
        return [(path, len(records))]

    def rows(self, part: str, start: int, stop: int) -> Iterator[Row | Unreadable]:
        records = llava_records(part)
        folder = self.image_folder or os.path.dirname(os.path.abspath(part))
        for index in range(start, min(stop, len(records))):
            record = records[index]
            if not isinstance(record, dict):
                why = record if isinstance(record, str) else f"record {index} is a JSON {type(record).__name__}"
                yield Unreadable(f"{index:09d}", why)
                continue
            key = str(record.get("id", f"{index:09d}"))
            image = record.get("image")
            image = os.path.join(folder, image) if isinstance(image, str) and image else None
            yield Row(key, {k: v for k, v in record.items() if k != "image"}, image)


@dataclass(frozen=True)
class ConversationSource:
    """A stage's data: `units` (`clip_train.data.source_kinds`) and the records in each; `option` its config key."""

    option: str
    units: list[str]
    sizes: list[int]

    @classmethod
    def of(
        cls,
        spec,
        option: str,
        image_folder: str | None = None,
        img_key: str = "image",
        caption_key: str = "conversations",
        rows_per_unit: int = 100,
        cache_dir: str | None = None,
    ) -> "ConversationSource":
        """The units of `spec` (a path, pattern or list), checked at start-up: a missing file or field raises,
        naming `option`. Remote shards are refused: an exact epoch needs every unit's size."""
        records = LlavaRecords(image_folder)
        kind = records if all(str(s).endswith(RECORD_SUFFIXES) for s in ([spec] if isinstance(spec, str) else spec)) else None
        units = expand_shards(spec, option, kind=kind, columns=ColumnKeys(img_key, caption_key), rows_per_unit=rows_per_unit)
        remote = next((unit for unit in units if is_remote(unit)), None)
        if remote is not None:
            raise ValueError(f"{option}: {remote} is remote; the VLM reads local data, whose size gives exact epochs")
        sizes = shard_sizes(units, cache_dir)
        refuse_empty_shards(units, sizes, option)
        return cls(option, units, sizes)

    @property
    def records(self) -> int:
        return sum(self.sizes)


def _record_text(sample: dict) -> bytes | None:
    """The conversation member of a sample: a tar's KEY.json, else the row's `txt`."""
    return sample.get("json", sample.get("txt"))


def _check_image(data: bytes) -> bytes:
    """`data` if it decodes in full (PIL's errors otherwise): a truncated image is caught where it is read."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
    return data


def sample_conversation(sample: dict, counter: BadSampleCounter, with_image: bool = True) -> Conversation | None:
    """The `Conversation` of one sample (its image the encoded bytes), or None, counted in `counter` by kind."""
    url, key = sample["__url__"], sample["__key__"]
    where = f"{url}:{key}"
    if "__unreadable__" in sample:
        counter.skip("unreadable_row", url, f"{where}: {sample['__unreadable__']}")
        return None
    image = next((sample[ext] for ext in IMAGE_EXTENSIONS if ext in sample), None)
    if image is None:
        counter.skip("missing_image", url, f"{where} has no image ({sample.get('__missing__') or sorted(sample)})")
        return None
    text = _record_text(sample)
    if text is None:
        counter.skip("missing_caption", url, f"{where} has no conversation (a KEY.json member or a conversations cell)")
        return None
    try:
        record = json.loads(text)
        turns = record_turns({"conversations": record} if isinstance(record, list) else record)
    except (ValueError, UnicodeDecodeError) as error:
        counter.skip("unreadable_row", url, f"{where}: {error}")
        return None
    if with_image and image_or_none(_check_image, image, url, where, counter) is None:
        return None
    counter.decoded += 1
    return Conversation(image, turns, key)


def read_conversations(source: ConversationSource, with_image: bool = True) -> tuple[list[Conversation], dict[str, int]]:
    """Every readable conversation of `source`, in order, in this process (a test set, the tokenizer's texts), and
    the bad items skipped by kind (logged)."""
    counter = BadSampleCounter(BadDataPolicy(max_rate=1.0))
    samples = unit_samples(({"url": unit} for unit in source.units), counter)
    conversations = [c for sample in samples if (c := sample_conversation(sample, counter, with_image)) is not None]
    skipped = {kind: n for kind, n in zip(BAD_KINDS, counter.counts) if n}
    if skipped:
        log.warning("%s: skipped %d bad records of %d (%s)", source.option, sum(skipped.values()), source.records, skipped)
    return conversations, skipped
