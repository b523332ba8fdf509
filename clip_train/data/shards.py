"""Shard lists: brace patterns and lists expanded to URLs, checked up front, sized from sidecars or tar headers.

A shard spec is a string or a list of strings. Each string may hold brace ranges
(`/data/cc3m/{00000..00331}.tar`), `::`-separated alternatives and, for local paths, shell
wildcards (`/data/cc3m/*.tar`, sorted); `pipe:`, `s3://`, `http(s)://` and `gs://` URLs pass
through to webdataset untouched (braces expanded, never checked for existence). Local paths are checked at
start-up so a typo fails before any model is built, naming the missing file.
"""

import glob
import json
import os
from collections.abc import Sequence

import braceexpand

from clip_train.data.counted_sizes import counted_sizes
from clip_train.data.row_source import RowSource
from clip_train.data.source_kinds import SHARDS, ColumnKeys, is_row_unit, row_source_units, source_kind, unit_size
from clip_train.data.tar_count import looks_like_tar
from clip_train.shard_patterns import brace_form

DEFAULT_COLUMNS = ColumnKeys()  # OpenCLIP's table columns, Hugging Face's image and text
REMOTE_PREFIXES = ("pipe:", "s3://", "http://", "https://", "gs://", "hf://")


def is_remote(url: str) -> bool:
    return url.startswith(REMOTE_PREFIXES)


def expand_shards(
    spec: str | Sequence[str],
    option: str,
    kind: str | RowSource | None = None,
    columns: ColumnKeys = DEFAULT_COLUMNS,
    rows_per_unit: int = 10_000,
) -> list[str]:
    """All units named by `spec`, in order: tar shard URLs (local ones must exist), and the row units of any table,
    image folder, Hugging Face dataset or other kind it names (`clip_train.data.source_kinds`; its kind inferred
    from the path unless `kind` is given: a name, a dotted class path or a `RowSource`; its columns read as
    `columns` says). `option` names the config key."""
    patterns = [spec] if isinstance(spec, str) else list(spec)
    urls = []
    for pattern in patterns:
        for alternative in str(pattern).split("::"):
            for url in braceexpand.braceexpand(alternative):
                local = not is_remote(url) and not is_row_unit(url)
                path_kind = kind or (source_kind(url) if local and os.path.exists(url.removeprefix("file:")) else SHARDS)
                if path_kind != SHARDS:
                    urls.extend(row_source_units(url, path_kind, option, columns, rows_per_unit)[0])
                    continue
                urls.extend(_glob(url, option) if local and any(c in url for c in "*?[") else [url])
    if not urls:
        raise ValueError(f"{option} names no shards")
    direct_s3 = next((url for url in urls if url.startswith("s3://")), None)
    if direct_s3 is not None and "GOPEN_REWRITE" not in os.environ:  # webdataset opens s3:// only through a rewrite
        raise ValueError(f"{option}: webdataset cannot open {direct_s3!r} directly; use 'pipe:aws s3 cp {direct_s3} -'")
    urls = [url for url in urls if url]
    folder = next(
        (url for url in urls if not is_remote(url) and not is_row_unit(url) and os.path.isdir(url.removeprefix("file:"))), None
    )
    if folder is not None:
        raise IsADirectoryError(f"{option}: {folder!r} is a directory, not a shard. {_name_the_shards(folder, option)}")
    missing = [
        url for url in urls if not is_remote(url) and not is_row_unit(url) and not os.path.isfile(url.removeprefix("file:"))
    ]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise FileNotFoundError(f"{option}: shard {missing[0]!r} does not exist{more}")
    return urls


def _name_the_shards(folder: str, option: str) -> str:
    """How to name the shards of `folder` instead: its `*.tar` files as a wildcard and, when they are one numbered
    run (00000.tar ... 00331.tar), as the brace form."""
    folder = folder.rstrip("/")
    tars = sorted(glob.glob(os.path.join(folder.removeprefix("file:"), "*.tar")))
    if not tars:
        return f"It holds no .tar files; name the shard files themselves, e.g. {option}='{folder}/{{00000..00009}}.tar'"
    braces = brace_form(tars)
    brace_hint = f" or {option}='{braces}'" if braces != "PATTERN" else ""
    return f"Name its {len(tars)} .tar files: {option}='{folder}/*.tar'{brace_hint} (quoted, so the shell passes it whole)"


def refuse_empty_shards(urls: Sequence[str], sizes: Sequence[int] | None, option: str) -> None:
    """Raise ValueError naming the first local shard that is empty, is no tar (an HTML error page saved as
    NNNNN.tar, a README a `*` pattern matched), or holds no samples by `sizes` (from `shard_sizes`; None: unknown).
    Counted as 0 samples, such a file would pass silently and shrink the epoch."""
    for index, url in enumerate(urls):
        if is_remote(url) or is_row_unit(url):  # a row source with no pair was refused when its units were made
            continue
        path = url.removeprefix("file:")
        if os.path.getsize(path) == 0:
            what = "is an empty file (0 bytes)"
        elif not looks_like_tar(path):
            what = "is not a tar archive"
        elif sizes is not None and sizes[index] == 0:
            what = "is a tar with no samples (no KEY.jpg + KEY.txt members)"
        else:
            continue
        raise ValueError(f"{option}: shard {url!r} {what}; remove it from the shards, or fix the pattern")


def _glob(pattern: str, option: str) -> list[str]:
    """The files a local wildcard pattern (`/data/cc3m/*.tar`) matches, sorted; none is an error."""
    matches = sorted(glob.glob(pattern.removeprefix("file:")))
    if not matches:
        raise FileNotFoundError(f"{option}: pattern {pattern!r} matches no file")
    return matches


def _sidecar_sizes(folder: str) -> dict[str, int]:
    """{shard file name: samples} from `sizes.json`, else from img2dataset's `*_stats.json` files."""
    sizes_path = os.path.join(folder, "sizes.json")
    if os.path.isfile(sizes_path):
        with open(sizes_path) as f:
            return {name: int(n) for name, n in json.load(f).items()}
    sizes = {}
    for stats_path in glob.glob(os.path.join(folder, "*_stats.json")):
        with open(stats_path) as f:
            stats = json.load(f)
        shard = os.path.basename(stats_path).removesuffix("_stats.json") + ".tar"
        sizes[shard] = int(stats["successes"])
    return sizes


def shard_sizes(urls: Sequence[str], cache_dir: str | None = None) -> list[int] | None:
    """Samples in each of `urls`: from the sidecars beside local shards, else counted from their tar headers
    (`clip_train.data.counted_sizes`, cached in `cache_dir`); None if any shard is remote, as reading its
    size would need a full download."""
    if any(is_remote(url) for url in urls):
        return None
    rows = {url: unit_size(url) for url in urls if is_row_unit(url)}  # a row unit knows its size
    tars = [url for url in urls if url not in rows]
    tar_sizes = iter(_tar_sizes(tars, cache_dir) if tars else [])
    return [rows[url] if url in rows else next(tar_sizes) for url in urls]


def _tar_sizes(urls: Sequence[str], cache_dir: str | None) -> list[int]:
    paths = [url.removeprefix("file:") for url in urls]
    sidecars = {folder: _sidecar_sizes(folder) for folder in {os.path.dirname(path) for path in paths}}
    sizes = [sidecars[os.path.dirname(path)].get(os.path.basename(path)) for path in paths]
    unsized = [path for path, size in zip(paths, sizes) if size is None]
    counted = iter(counted_sizes(unsized, cache_dir) if unsized else [])
    return [next(counted) if size is None else size for size in sizes]


def count_samples(urls: Sequence[str], cache_dir: str | None = None) -> int | None:
    """Total samples in `urls` (see `shard_sizes`), or None if unknown."""
    sizes = shard_sizes(urls, cache_dir)
    return None if sizes is None else sum(sizes)
