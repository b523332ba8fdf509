"""Several training sources mixed by weight: `data.sources=[{shards: ..., weight: 0.7}, {shards: ..., weight: 0.3}]`.

Mixing happens at the shard level, inside the resampled stream: each next shard is drawn with
probability proportional to `weight / samples in its source`, uniformly within a source. A
source then contributes a share `weight` of the *samples* (not of the shards), whatever its
shard sizes, as long as its size is known (`sizes.json` or img2dataset `*_stats.json` beside
its shards, else counted from the headers of local tars, or given as `samples: N` in the source,
as remote shards need). Without sizes for every source, shards are assumed to hold the same
number of samples in every source, and each draw picks a source with probability `weight` (a warning
says so). Sample-level interleaving would follow the weights exactly even without sizes, but
needs a tar stream and a shuffle buffer open per source in every worker; shard-level draws
keep one of each and a single seeded RNG per worker (what resume needs to replay the stream).

Without resampling every pass reads each shard once, so sources mix in proportion to their
sizes and weights cannot be honoured: giving one is an error that says so.
"""

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from clip_train.data.shards import expand_shards, shard_sizes

log = logging.getLogger(__name__)

SOURCE_KEYS = {"shards", "weight", "name", "samples"}


@dataclass(frozen=True)
class ShardSource:
    """One training source: its shard URLs, its sampling weight (None: no weights given), size (None: unknown)
    and the samples in each of its shards (None: unknown, as for remote shards)."""

    name: str
    urls: list[str]
    weight: float | None
    samples: int | None
    shard_sizes: list[int] | None = None


def parse_sources(
    sources: Sequence[Mapping], resampled: bool, cache_dir: str | None = None, expand: Callable = expand_shards
) -> list[ShardSource]:
    """`data.sources` checked and expanded: every source's shards exist, weights are positive, and only resampled.
    A source's `shards` may be any kind of data (`expand`: `clip_train.data.shards.expand_shards` with the data
    module's column options), so a table and tar shards mix. Sizes of local shards without sidecars are counted
    from their tar headers (cached in `cache_dir`); a table, folder or Hugging Face source knows its own."""
    if not sources:
        raise ValueError("data.sources is empty: give at least one {shards: ..., weight: ...}")
    parsed = []
    for index, source in enumerate(sources):
        option = f"data.sources[{index}]"
        if not isinstance(source, Mapping) or "shards" not in source:
            raise ValueError(
                f"{option} must be a mapping with a 'shards' pattern, e.g. {{shards: /d/{{000..009}}.tar, weight: 0.5}}"
            )
        unknown = sorted(set(source) - SOURCE_KEYS)
        if unknown:
            raise ValueError(f"{option} has unknown key {unknown[0]!r}; accepted: {', '.join(sorted(SOURCE_KEYS))}")
        weight = source.get("weight")
        if weight is not None and not float(weight) > 0:
            raise ValueError(f"{option}.weight must be positive, got {weight}")
        if weight is not None and not resampled:
            raise ValueError(
                f"{option}.weight needs data.resampled=true: without resampling each pass reads every shard once, so "
                "sources mix in proportion to their sizes. Drop the weights, or set data.resampled=true"
            )
        urls = expand(source["shards"], f"{option}.shards")
        name = str(source.get("name") or f"source{index}")
        if index > 0 and (weight is None) != (parsed[0].weight is None):
            raise ValueError(f"{option}: give every source a weight, or none (then shards are drawn alike, as from one list)")
        samples = source.get("samples")  # given for remote shards, whose size is not read
        if samples is not None and not int(samples) > 0:
            raise ValueError(f"{option}.samples must be a positive sample count, got {samples}")
        sizes = shard_sizes(urls, cache_dir)
        samples = int(samples) if samples is not None else (sum(sizes) if sizes is not None else None)
        parsed.append(ShardSource(name, urls, None if weight is None else float(weight), samples, sizes))
    return parsed


def shard_weights(sources: Sequence[ShardSource]) -> list[float] | None:
    """Draw weight of every shard, in the order of the concatenated URLs, so that sources mix by their weights.

    With every size known a shard of source s weighs weight_s / samples_s, else weight_s / shards_s.
    None when no source has a weight: every shard is drawn alike, as from one list.
    """
    if sources[0].weight is None:
        return None
    sized = all(source.samples for source in sources)
    if not sized:
        log.warning(
            "some data.sources have remote shards without `samples: N`: mixing assumes equally sized shards in every "
            "source, so a source with larger shards gets more than its weight of the samples"
        )
    weights = []
    for source in sources:
        per_shard = source.weight / (source.samples if sized else len(source.urls))
        weights.extend([per_shard] * len(source.urls))
    return weights
