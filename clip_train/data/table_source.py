"""Tables of image-caption pairs: CSV, TSV, JSONL and parquet, as OpenCLIP's `--dataset-type csv` reads them.

A table has an image column (`img_key`, OpenCLIP's `--csv-img-key`, default `filepath`) and a caption
column (`caption_key`, `--csv-caption-key`, default `title`). The image column holds a file path
(relative paths resolve against the table's folder) or, in parquet, the image bytes themselves
(a binary column, or a struct with `bytes` as Hugging Face's `Image` feature stores it). CSV uses
`separator` (OpenCLIP's `--csv-separator`, default a tab); `.tsv` is always tab-separated. An `http(s)://`
image is not fetched: nothing is downloaded while training (img2dataset makes shards from such tables).

A table whose header (or, for JSONL, no line) holds the two columns is refused at start-up, naming the
columns it has. A JSONL line that is no JSON object, or a row without one of the columns, is a bad row,
skipped and counted while training. A table is read in units of rows (`clip_train.data.row_source`);
each DataLoader worker parses a table once and keeps it.
"""

import csv
import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass

from clip_train.data.row_source import Row, RowSource, Unreadable

DEFAULT_IMG_KEY, DEFAULT_CAPTION_KEY, DEFAULT_SEPARATOR = "filepath", "title", "\t"
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet")


def _refuse_missing(path: str, columns: list[str], img_key: str, caption_key: str) -> None:
    if img_key not in columns or caption_key not in columns:
        raise ValueError(
            f"{path} has the columns {columns}, not {img_key!r} and {caption_key!r}: set data.img_key and data.caption_key "
            "(OpenCLIP's --csv-img-key and --csv-caption-key)"
        )


def _jsonl_rows(path: str) -> tuple[list, list[str]]:
    """(every line as a dict, or the reason it is none; the keys any line has)."""
    rows, columns = [], {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                row = f"line {number} is no JSON ({error})"
            if isinstance(row, dict):
                columns.update(dict.fromkeys(row))
            elif not isinstance(row, str):
                row = f"line {number} is a JSON {type(row).__name__}, not an object"
            rows.append(row)
    return rows, list(columns)


@functools.lru_cache(maxsize=4)
def table_columns(path: str, img_key: str, caption_key: str, separator: str) -> tuple[list, list, dict[int, str]]:
    """(image column, caption column, {row: why it cannot be read}) of the whole table, read once per process."""
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        _refuse_missing(path, table.column_names, img_key, caption_key)
        return table.column(img_key).to_pylist(), table.column(caption_key).to_pylist(), {}
    if path.endswith(".jsonl"):
        rows, columns = _jsonl_rows(path)
    else:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t" if path.endswith(".tsv") else separator)
            rows, columns = list(reader), list(reader.fieldnames or [])
    _refuse_missing(path, columns, img_key, caption_key)
    bad = {index: row for index, row in enumerate(rows) if isinstance(row, str)}
    bad |= {
        index: f"row {index} has no {key!r} (it has {sorted(k for k in row if k is not None)})"
        for index, row in enumerate(rows)
        if index not in bad
        for key in (img_key, caption_key)
        if key not in row
    }
    rows = [{} if index in bad else row for index, row in enumerate(rows)]
    return [row.get(img_key) for row in rows], [row.get(caption_key) for row in rows], bad


@dataclass(frozen=True)
class TableSource(RowSource):
    """A .csv, .tsv, .jsonl or .parquet table (see the module docstring); one part, the table, keyed by row number."""

    name = "table"
    img_key: str = DEFAULT_IMG_KEY
    caption_key: str = DEFAULT_CAPTION_KEY
    separator: str = DEFAULT_SEPARATOR

    def claims(self, path: str) -> bool:
        return path.endswith(TABLE_SUFFIXES)

    def parts(self, path: str) -> list[tuple[str, int]]:
        return [(path, len(table_columns(path, self.img_key, self.caption_key, self.separator)[0]))]

    def rows(self, part: str, start: int, stop: int) -> Iterator[Row | Unreadable]:
        images, captions, bad = table_columns(part, self.img_key, self.caption_key, self.separator)
        for row in range(start, min(stop, len(images))):
            key = f"{row:09d}"
            yield Unreadable(key, bad[row]) if row in bad else Row(key, captions[row], images[row])
