"""The kinds of data a source may be, and the one contract they share: units that yield samples.

    tar shards    a brace pattern, list or wildcard of .tar files (local or remote)  `clip_train.data.shards`
    table         a .csv, .tsv, .jsonl or .parquet file of image paths or bytes and captions  `table_source`
    folder        a folder of KEY.jpg + KEY.txt pairs, at any depth                 `folder_source`
    classes       an ImageFolder ROOT/CLASS/*.jpg, captioned by class name and template (FLYP; only by
                  `data.kind=classes`, never inferred)                               `class_folder_source`
    hf            a Hugging Face `datasets` folder saved with `save_to_disk`, or one .arrow file  `arrow_source`

`source_kind` infers the kind from the path, as OpenCLIP's `--dataset-type auto` does (`data.kind`
overrides it). `source_units` turns a source into units and their sizes: a tar shard is a unit;
any other source is cut into units of `rows_per_unit` rows, each named by a self-describing string
`KIND:PATH?OPTIONS#START:STOP`. `unit_samples` reads units into samples, the shape a tar shard gives
(`clip_train.data.row_samples`). The streaming pipeline only ever sees units and their sizes, so
shuffling, splitting across ranks and workers, exactly-once epochs, exact mid-epoch resume,
resampling and weighted mixing (`data.sources`) work the same for every kind, and kinds mix.
"""

import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from urllib.parse import parse_qsl, urlencode

from clip_train.data.arrow_source import (
    DEFAULT_IMAGE_KEY,
    DEFAULT_TEXT_KEY,
    arrow_files,
    arrow_rows,
    arrow_samples,
    is_saved_dataset,
)
from clip_train.data.bad_data import BadSampleCounter
from clip_train.data.class_folder_source import class_folder, class_folder_samples
from clip_train.data.folder_source import folder_pairs, folder_samples
from clip_train.data.shard_reader import shard_samples
from clip_train.data.table_source import (
    DEFAULT_CAPTION_KEY,
    DEFAULT_IMG_KEY,
    DEFAULT_SEPARATOR,
    TABLE_SUFFIXES,
    table_rows,
    table_samples,
)

log = logging.getLogger(__name__)
KINDS = ("shards", "table", "folder", "hf", "classes")
ROW_KINDS = ("table", "folder", "hf", "classes")


@dataclass(frozen=True)
class ColumnKeys:
    """Which columns hold the image and the caption. None: the kind's default (a table: OpenCLIP's `filepath` and
    `title`; a Hugging Face dataset: `image` and `text`). `separator`: a CSV's (default a tab, as OpenCLIP's)."""

    img_key: str | None = None
    caption_key: str | None = None
    separator: str = DEFAULT_SEPARATOR

    def for_kind(self, kind: str) -> "ColumnKeys":
        image, caption = (DEFAULT_IMAGE_KEY, DEFAULT_TEXT_KEY) if kind == "hf" else (DEFAULT_IMG_KEY, DEFAULT_CAPTION_KEY)
        return ColumnKeys(self.img_key or image, self.caption_key or caption, self.separator)


def source_kind(path: str) -> str:
    """The kind of the source at `path` (see the module docstring)."""
    local = path.removeprefix("file:")
    if os.path.isdir(local):
        if is_saved_dataset(local):
            return "hf"
        splits = sorted(name for name in os.listdir(local) if is_saved_dataset(os.path.join(local, name)))
        if splits:
            raise ValueError(
                f"{path} is a Hugging Face DatasetDict: name one of its splits, e.g. {os.path.join(path, splits[0])}"
            )
        return "folder"
    if local.endswith(TABLE_SUFFIXES):
        return "table"
    if local.endswith(".arrow"):
        return "hf"
    return "shards"


def _unit(kind: str, path: str, keys: ColumnKeys, start: int, stop: int) -> str:
    options = urlencode({k: v for k, v in asdict(keys).items() if v is not None}) if kind not in ("folder", "classes") else ""
    return f"{kind}:{path}?{options}#{start}:{stop}"


def _ranges(kind: str, path: str, rows: int, keys: ColumnKeys, rows_per_unit: int) -> tuple[list[str], list[int]]:
    starts = range(0, rows, rows_per_unit)
    return [_unit(kind, path, keys, s, min(s + rows_per_unit, rows)) for s in starts], [
        min(rows_per_unit, rows - s) for s in starts
    ]


def row_source_units(
    path: str, kind: str, option: str, keys: ColumnKeys = ColumnKeys(), rows_per_unit: int = 10_000
) -> tuple[list[str], list[int]]:
    """(units, their sizes) of a table, folder or Hugging Face source; ValueError naming `option` when it holds none."""
    local, keys = path.removeprefix("file:"), keys.for_kind(kind)
    if not os.path.exists(local):
        raise FileNotFoundError(f"{option}: {path!r} does not exist")
    units, sizes = [], []
    if kind == "table":
        units, sizes = _ranges(
            kind, local, table_rows(local, keys.img_key, keys.caption_key, keys.separator), keys, rows_per_unit
        )
    elif kind == "folder":
        pairs, uncaptioned = folder_pairs(local)
        if uncaptioned:
            log.warning("%s: %d images have no KEY.txt caption beside them and are left out", path, uncaptioned)
        units, sizes = _ranges(kind, local, len(pairs), keys, rows_per_unit)
    elif kind == "classes":
        units, sizes = _ranges(kind, local, len(class_folder(local)[0]), keys, rows_per_unit)
    elif kind == "hf":
        for file in arrow_files(local) if os.path.isdir(local) else [local]:
            more = _ranges(kind, file, arrow_rows(file, keys.img_key, keys.caption_key), keys, rows_per_unit)
            units, sizes = units + more[0], sizes + more[1]
    else:
        raise ValueError(f"{option}: data.kind={kind!r} is not one of {', '.join(KINDS)}")
    if not units:
        raise ValueError(f"{option}: {path} holds no image-caption pair (as a {kind})")
    return units, sizes


def is_row_unit(url: str) -> bool:
    """Whether `url` names rows of a table, folder or Hugging Face source rather than a tar shard."""
    return url.split(":", 1)[0] in ROW_KINDS and "#" in url


def unit_size(unit: str) -> int:
    """The rows a row unit holds (its stop minus its start)."""
    start, stop = _parse(unit)[3:]
    return stop - start


def _parse(unit: str) -> tuple[str, str, dict, int, int]:
    kind, rest = unit.split(":", 1)
    rest, span = rest.rsplit("#", 1)
    path, _, query = rest.rpartition("?")
    start, stop = (int(n) for n in span.split(":"))
    return kind, path, dict(parse_qsl(query, keep_blank_values=True)), start, stop


def unit_samples(units: Iterator[dict], counter: BadSampleCounter) -> Iterator[dict]:
    """Samples of every unit `{"url": ...}` in `units`, in order: a tar shard's as `shard_samples` reads them, a row
    unit's from its source. A unit that cannot be read is counted (`unreadable_shard`), never raised."""
    for unit in units:
        url = unit["url"]
        if not is_row_unit(url):
            yield from shard_samples(iter([unit]), counter)
            continue
        kind, path, options, start, stop = _parse(url)
        try:
            if kind == "table":
                rows = table_samples(url, path, start, stop, options["img_key"], options["caption_key"], options["separator"])
            elif kind == "folder":
                rows = folder_samples(url, path, start, stop)
            elif kind == "classes":
                rows = class_folder_samples(url, path, start, stop)
            else:
                rows = arrow_samples(url, path, start, stop, options["img_key"], options["caption_key"])
            yield from rows
        except (OSError, ValueError) as error:
            counter.skip("unreadable_shard", url, f"{error.__class__.__name__}: {error}")
