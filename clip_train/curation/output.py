"""Write the kept pairs as tar shards: the source's own image bytes, caption and key, the scores in the JSON."""

import glob
import json
import os
from collections.abc import Iterator

from clip_train.data.bad_data import BadDataPolicy, BadSampleCounter
from clip_train.data.pipeline import IMAGE_EXTENSIONS
from clip_train.data.shard_writer import Sample, write_shards
from clip_train.data.source_kinds import unit_samples

PREFIX = "curated"


def _kept_samples(kept: dict[str, dict[str, dict]]) -> Iterator[Sample]:
    """The samples of `kept` ({unit: {key: metadata to add}}), read again from their units in order."""
    counter = BadSampleCounter(BadDataPolicy(max_rate=1.0))  # bad ones were counted while scoring
    for unit, by_key in kept.items():
        for sample in unit_samples(iter([{"url": unit}]), counter):
            added = by_key.get(sample["__key__"])
            extension = next((ext for ext in IMAGE_EXTENSIONS if ext in sample), None)
            if added is None or extension is None:
                continue
            metadata = json.loads(sample["json"]) if "json" in sample else {}
            caption = sample["txt"].decode("utf-8").strip()
            yield Sample(sample["__key__"], sample[extension], caption, {**metadata, **added}, extension)


def write_kept(out: str, kept: dict[str, dict[str, dict]], samples_per_shard: int) -> tuple[list[str], int]:
    """Replace `out`'s curated-NNNNN.tar shards (and sizes.json) with the kept pairs; returns the shard paths and the
    pairs written."""
    os.makedirs(out, exist_ok=True)
    for stale in glob.glob(os.path.join(out, f"{PREFIX}-*.tar")) + glob.glob(os.path.join(out, "sizes.json")):
        os.remove(stale)
    shards = write_shards(out, PREFIX, _kept_samples(kept), samples_per_shard)
    with open(os.path.join(out, "sizes.json")) as f:
        return shards, sum(json.load(f).values())
