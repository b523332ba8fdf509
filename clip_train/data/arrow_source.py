"""A Hugging Face `datasets` folder saved with `save_to_disk`, read locally with pyarrow (no `datasets` needed).

Such a folder holds `dataset_info.json`, `state.json` (whose `_data_files` list the Arrow files in order)
and the Arrow stream files themselves; a `DatasetDict` holds one such folder per split (`train/`, ...).
The image column (`image_key`, default `image`: Hugging Face's `Image` feature, a struct of `bytes` and
`path`, or a path string) and the caption column (`caption_key`, default `text`) are read from each file,
memory-mapped. Each Arrow file is read in units of rows (`<file>#<start>:<stop>`,
`clip_train.data.source_kinds`).
"""

import functools
import json
import os
from collections.abc import Iterator

from clip_train.data.row_samples import row_sample

DEFAULT_IMAGE_KEY, DEFAULT_TEXT_KEY = "image", "text"


def is_saved_dataset(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "state.json")) and os.path.isfile(os.path.join(folder, "dataset_info.json"))


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


def arrow_rows(path: str, image_key: str, caption_key: str) -> int:
    table = arrow_table(path)
    missing = {image_key, caption_key} - set(table.column_names)
    if missing:
        raise ValueError(
            f"{path} has the columns {table.column_names}, not {sorted(missing)}: set data.img_key and data.caption_key"
        )
    return table.num_rows


def arrow_samples(unit: str, path: str, start: int, stop: int, image_key: str, caption_key: str) -> Iterator[dict]:
    """Rows start..stop-1 of the Arrow file as samples (`clip_train.data.row_samples`), keyed by file and row."""
    rows = arrow_table(path).slice(start, stop - start).select([image_key, caption_key]).to_pylist()
    stem, folder = os.path.splitext(os.path.basename(path))[0], os.path.dirname(path)
    for offset, row in enumerate(rows):
        yield row_sample(unit, f"{stem}/{start + offset:09d}", row[caption_key], row[image_key], folder)
