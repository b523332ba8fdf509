"""A Hugging Face `datasets` folder saved with `save_to_disk`, read locally with pyarrow (no `datasets` needed).

Such a folder holds `dataset_info.json`, `state.json` (whose `_data_files` list the Arrow files in order)
and the Arrow stream files themselves; a `DatasetDict` holds one such folder per split (`train/`, ...),
and is refused with the split to name. One `.arrow` file is a source too. The image column (`img_key`,
default `image`: Hugging Face's `Image` feature, a struct of `bytes` and `path`, or a path string) and the
caption column (`caption_key`, default `text`) are read from each file, memory-mapped. Each Arrow file is
a part, read in units of rows (`clip_train.data.row_source`).
"""

import functools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

from clip_train.data.row_source import Row, RowSource

DEFAULT_IMAGE_KEY, DEFAULT_TEXT_KEY = "image", "text"


def is_saved_dataset(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "state.json")) and os.path.isfile(os.path.join(folder, "dataset_info.json"))


def saved_splits(folder: str) -> list[str]:
    """The splits of a saved `DatasetDict` folder (its subfolders that are saved datasets), sorted; [] for others."""
    if not os.path.isdir(folder):
        return []
    return sorted(name for name in os.listdir(folder) if is_saved_dataset(os.path.join(folder, name)))


def arrow_files(folder: str) -> list[str]:
    """The Arrow files of a `save_to_disk` folder, in the order its `state.json` lists them."""
    with open(os.path.join(folder, "state.json")) as f:
        state = json.load(f)
    return [os.path.join(folder, entry["filename"]) for entry in state["_data_files"]]


@functools.lru_cache(maxsize=8)
def arrow_table(path: str):
    """The Arrow stream file at `path` as a pyarrow Table over a memory map (nothing copied)."""
    import pyarrow as pa

    return pa.ipc.open_stream(pa.memory_map(path)).read_all()


@dataclass(frozen=True)
class SavedDataset(RowSource):
    """A saved Hugging Face dataset or one of its .arrow files (see the module docstring); keyed by file and row."""

    name = "hf"
    img_key: str = DEFAULT_IMAGE_KEY
    caption_key: str = DEFAULT_TEXT_KEY

    def claims(self, path: str) -> bool:
        splits = saved_splits(path)
        if splits and not is_saved_dataset(path):
            raise ValueError(
                f"{path} is a Hugging Face DatasetDict: name one of its splits, e.g. {os.path.join(path, splits[0])}"
            )
        return is_saved_dataset(path) or path.endswith(".arrow")

    def parts(self, path: str) -> list[tuple[str, int]]:
        parts = []
        for file in arrow_files(path) if os.path.isdir(path) else [path]:
            table = arrow_table(file)
            if self.img_key not in table.column_names or self.caption_key not in table.column_names:
                raise ValueError(
                    f"{file} has the columns {table.column_names}, not {self.img_key!r} and {self.caption_key!r}: set "
                    "data.img_key and data.caption_key"
                )
            parts.append((file, table.num_rows))
        return parts

    def rows(self, part: str, start: int, stop: int) -> Iterator[Row]:
        rows = arrow_table(part).slice(start, stop - start).select([self.img_key, self.caption_key]).to_pylist()
        stem = os.path.splitext(os.path.basename(part))[0]
        for offset, row in enumerate(rows):
            yield Row(f"{stem}/{start + offset:09d}", row[self.caption_key], row[self.img_key])
