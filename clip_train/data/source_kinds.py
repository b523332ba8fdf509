"""What a path names, and the one contract every source shares: units that yield the samples a tar shard gives.

    tar shards    a brace pattern, list or wildcard of .tar files (local or remote)  `clip_train.data.shards`
    table         a .csv, .tsv, .jsonl or .parquet file of image paths or bytes and captions  `table_source`
    folder        a folder of KEY.jpg + KEY.txt pairs, at any depth                 `folder_source`
    hf            a Hugging Face `datasets` folder saved with `save_to_disk`, or one .arrow file  `arrow_source`
    classes       an ImageFolder ROOT/CLASS/*.jpg captioned by class name (FLYP; named, never inferred)  `class_folder_source`
    your own      any `RowSource` class, named by its dotted path or a config      `clip_train.data.row_source`

`source_kind` infers the kind from the path by asking each kind clip_train ships (`configs/data/kind/`) whether
it claims it, as OpenCLIP's `--dataset-type auto` does; a path no kind claims is tar shards (`data.kind`
overrides it). `row_source_units` turns a non-tar source into units and their sizes, `unit_samples` reads any
units into samples. The streaming pipeline only ever sees units and their sizes, so shuffling, splitting across
ranks and workers, exactly-once epochs, exact mid-epoch resume, resampling and weighted mixing (`data.sources`)
work the same for every kind, and kinds mix.
"""

import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass

from clip_train.data.bad_data import BadSampleCounter
from clip_train.data.row_source import RowSource, build_kind, parse_unit, row_units, shipped_kinds, unit_samples_of_rows
from clip_train.data.shard_reader import shard_samples

SHARDS = "shards"


@dataclass(frozen=True)
class ColumnKeys:
    """Options for the kinds that take them: which columns hold the image and the caption, and a CSV's separator.
    None: the kind's default (a table: OpenCLIP's `filepath` and `title`; a Hugging Face dataset: `image` and
    `text`); `separator` default a tab, as OpenCLIP's."""

    img_key: str | None = None
    caption_key: str | None = None
    separator: str = "\t"

    def options(self) -> dict[str, str | None]:
        return asdict(self)


def source_kind(path: str) -> str:
    """The short name of the kind of the source at `path`: the one shipped kind that claims it, else shards."""
    local = path.removeprefix("file:")
    claims = [name for name in shipped_kinds() if build_kind(name).claims(local)]
    if len(claims) > 1:
        raise ValueError(f"{path} could be any of the kinds {claims}: name one with data.kind")
    return claims[0] if claims else SHARDS


def row_source_units(
    path: str,
    kind: "str | RowSource",
    option: str,
    keys: ColumnKeys | Mapping = ColumnKeys(),
    rows_per_unit: int = 10_000,
) -> tuple[list[str], list[int]]:
    """(units, their sizes) of a non-tar source: `kind` a shipped kind's name, a `RowSource` class's dotted path
    (built with those of `keys` it takes) or a built `RowSource`. ValueError naming `option` when it holds none."""
    local = path.removeprefix("file:")
    if not os.path.exists(local):
        raise FileNotFoundError(f"{option}: {path!r} does not exist")
    source = build_kind(kind, keys.options() if isinstance(keys, ColumnKeys) else keys)
    units, sizes = row_units(source, local, rows_per_unit)
    if not units:
        raise ValueError(f"{option}: {path} holds no image-caption pair (as {source.unit_name})")
    return units, sizes


def is_row_unit(url: str) -> bool:
    """Whether `url` names rows of a non-tar source rather than a tar shard."""
    return parse_unit(url) is not None


def unit_size(unit: str) -> int:
    """The rows a row unit holds (its stop minus its start)."""
    start, stop = parse_unit(unit)[3:]
    return stop - start


def unit_samples(units: Iterator[dict], counter: BadSampleCounter) -> Iterator[dict]:
    """Samples of every unit `{"url": ...}` in `units`, in order: a tar shard's as `shard_samples` reads them, a row
    unit's from its kind. A unit that cannot be read is counted (`unreadable_shard`), never raised."""
    for unit in units:
        url = unit["url"]
        if not is_row_unit(url):
            yield from shard_samples(iter([unit]), counter)
            continue
        try:
            yield from unit_samples_of_rows(url)
        except (OSError, ValueError) as error:
            counter.skip("unreadable_shard", url, f"{error.__class__.__name__}: {error}")
