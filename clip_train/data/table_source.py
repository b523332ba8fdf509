"""Tables of image-caption pairs: CSV, TSV, JSONL and parquet, as OpenCLIP's `--dataset-type csv` reads them.

A table has an image column (`img_key`, OpenCLIP's `--csv-img-key`, default `filepath`) and a caption
column (`caption_key`, `--csv-caption-key`, default `title`). The image column holds a file path
(relative paths resolve against the table's folder) or, in parquet, the image bytes themselves
(a binary column, or a struct with `bytes` as Hugging Face's `Image` feature stores it). CSV uses
`separator` (OpenCLIP's `--csv-separator`, default a tab); `.tsv` is always tab-separated. An `http(s)://`
image is not fetched: nothing is downloaded while training (img2dataset makes shards from such tables).

A table is read in units of rows (`<path>#<start>:<stop>`, `clip_train.data.source_kinds`); each
DataLoader worker parses a table once and keeps it.
"""

import csv
import functools
import json
import os
from collections.abc import Iterator

from clip_train.data.row_samples import row_sample

DEFAULT_IMG_KEY, DEFAULT_CAPTION_KEY, DEFAULT_SEPARATOR = "filepath", "title", "\t"
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet")


def _columns_of(rows: list[dict], path: str, img_key: str, caption_key: str) -> tuple[list, list]:
    if rows and (img_key not in rows[0] or caption_key not in rows[0]):
        raise ValueError(
            f"{path} has the columns {sorted(rows[0])}, not {img_key!r} and {caption_key!r}: set data.img_key and "
            "data.caption_key (OpenCLIP's --csv-img-key and --csv-caption-key)"
        )
    return [row[img_key] for row in rows], [row[caption_key] for row in rows]


@functools.lru_cache(maxsize=4)
def table_columns(path: str, img_key: str, caption_key: str, separator: str) -> tuple[list, list]:
    """(image column, caption column) of the whole table, read once per process."""
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        missing = {img_key, caption_key} - set(table.column_names)
        if missing:
            raise ValueError(
                f"{path} has the columns {table.column_names}, not {sorted(missing)}: set data.img_key and data.caption_key"
            )
        return table.column(img_key).to_pylist(), table.column(caption_key).to_pylist()
    with open(path, newline="", encoding="utf-8") as f:
        if path.endswith(".jsonl"):
            rows = [json.loads(line) for line in f if line.strip()]
        else:
            rows = list(csv.DictReader(f, delimiter="\t" if path.endswith(".tsv") else separator))
    return _columns_of(rows, path, img_key, caption_key)


def table_rows(path: str, img_key: str, caption_key: str, separator: str) -> int:
    return len(table_columns(path, img_key, caption_key, separator)[0])


def table_samples(
    unit: str, path: str, start: int, stop: int, img_key: str, caption_key: str, separator: str
) -> Iterator[dict]:
    """Rows start..stop-1 of the table as samples (`clip_train.data.row_samples`), keyed by row number."""
    images, captions = table_columns(path, img_key, caption_key, separator)
    folder = os.path.dirname(os.path.abspath(path))
    for row in range(start, min(stop, len(images))):
        yield row_sample(unit, f"{row:09d}", captions[row], images[row], folder)
