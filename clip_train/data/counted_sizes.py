"""Sample counts of local shards that have no sizes sidecar, from their tar headers, cached per file.

Counting reads every header of every shard (`clip_train.data.tar_count`), so the counts are kept in
`<cache_dir>/shard_sample_counts.json` as {absolute path: [bytes, mtime_ns, samples]}: a later run
reuses a count while the file keeps its size and modification time, and counts it again otherwise.
Shards are counted by a pool of threads, which overlaps the reads on network file systems.
"""

import json
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from clip_train.data.tar_count import count_tar_samples

log = logging.getLogger(__name__)

CACHE_FILE = "shard_sample_counts.json"
THREADS = 16


def _stamp(path: str) -> list[int]:
    """[bytes, mtime_ns] of the file: what changes when a shard is rewritten."""
    status = os.stat(path)
    return [status.st_size, status.st_mtime_ns]


def _load(cache_path: str | None) -> dict[str, list[int]]:
    if cache_path is None or not os.path.isfile(cache_path):
        return {}
    try:
        with open(cache_path) as f:
            return json.load(f)
    except (OSError, ValueError):  # a damaged cache is only a slower start
        return {}


def _save(cache_path: str, counts: dict[str, list[int]]) -> None:
    """Write the cache atomically: ranks counting at once each leave a whole file."""
    os.makedirs(os.path.dirname(cache_path), exist_ok=True)
    partial = f"{cache_path}.{os.getpid()}.partial"
    with open(partial, "w") as f:
        json.dump(counts, f)
    os.replace(partial, cache_path)


def counted_sizes(paths: Sequence[str], cache_dir: str | None) -> list[int]:
    """Samples in each local tar of `paths`, as a full read yields them; cached in `cache_dir` (None: not cached)."""
    cache_path = os.path.join(cache_dir, CACHE_FILE) if cache_dir else None
    cache = _load(cache_path)
    keys = [os.path.abspath(path) for path in paths]
    stamps = {key: _stamp(key) for key in keys}
    stale = sorted({key for key in keys if cache.get(key, [])[:2] != stamps[key]})
    started = time.monotonic()
    with ThreadPoolExecutor(min(THREADS, max(1, len(stale)))) as pool:
        for key, samples in zip(stale, pool.map(count_tar_samples, stale)):
            cache[key] = [*stamps[key], samples]
    if stale and cache_path is not None:
        _save(cache_path, cache)
    sizes = [cache[key][2] for key in keys]
    log.info(
        "counted %d samples in %d shards without sizes.json or *_stats.json from their tar headers (%d of them from the "
        "cache, %d scanned in %.1f s)",
        sum(sizes), len(keys), len(keys) - len(stale), len(stale), time.monotonic() - started,
    )  # fmt: skip
    return sizes
