"""Bad data, counted by kind: what a data worker skipped, and when so much is bad that the run must stop.

Every skipped item has one kind from `BAD_KINDS` (a fixed order, so counts travel as a
(K,) long tensor in each batch and sum across batches and ranks without any name lookup):

    corrupt_image     image bytes in a known format that fail to decode (typically a truncated JPEG)
    not_image         an image member whose bytes are no image format PIL knows (an HTML error page, text)
    empty_file        a zero-byte image or caption member
    missing_image     a sample without a jpg/jpeg/png/webp member
    missing_caption   a sample without a txt member
    empty_caption     a caption that is only whitespace
    caption_not_utf8  caption bytes that are not UTF-8
    unreadable_row    a row of a table, folder or dataset that cannot be read (a JSONL line that is no JSON object,
                      a caption file gone after start-up; `clip_train.data.row_source`)
    empty_shard       a shard that holds no sample (a zero-byte file, or a tar with no members)
    truncated_tar     a tar that ends early (its samples before the cut are kept)
    corrupt_tar       bytes that are not a tar archive
    unreadable_shard  a shard that cannot be opened or read (deleted after start-up, a failed pipe: command)

The first eight count samples; the last four count shards, one each. Together they are
`data/bad_samples`: the items the stream skipped.
"""

import logging
import math
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

SAMPLE_KINDS = (
    "corrupt_image",
    "not_image",
    "empty_file",
    "missing_image",
    "missing_caption",
    "empty_caption",
    "caption_not_utf8",
    "unreadable_row",
)
SHARD_KINDS = ("empty_shard", "truncated_tar", "corrupt_tar", "unreadable_shard")
BAD_KINDS = SAMPLE_KINDS + SHARD_KINDS


@dataclass(frozen=True)
class BadDataPolicy:
    """When a worker gives up on its data.

    max_rate: the largest tolerated share of bad items among all items a worker has met in
        this pass over its stream (bad / (bad + decoded); the count restarts with every epoch and
        validation run); above it the worker raises `BadDataError`.
    min_items: the rate is judged only once a worker has met this many items, so a few bad
        samples at the very start cannot stop a run.
    """

    max_rate: float = 0.2
    min_items: int = 1000

    def __post_init__(self):
        if not 0.0 <= self.max_rate <= 1.0:
            raise ValueError(f"data.max_bad_sample_rate must lie in [0, 1], got {self.max_rate}")
        if self.min_items < 1:
            raise ValueError(f"data.bad_sample_rate_min_items must be at least 1, got {self.min_items}")


class BadDataError(RuntimeError):
    """The share of bad samples says the dataset is broken, not noisy."""


class BadSampleCounter:
    """Counts one worker's decoded samples and skipped items by kind; `take()` returns the counts since its last call.

    Warnings are rate-limited per kind (the first 5, then the 2^n-th) and per shard for shard kinds,
    so a dataset with millions of bad samples does not flood the log.
    """

    def __init__(self, policy: BadDataPolicy | None = None) -> None:
        self.policy = policy or BadDataPolicy()
        self.decoded = 0
        self.counts = [0] * len(BAD_KINDS)
        self.bad_by_shard: dict[str, int] = {}
        self._reported = [0] * len(BAD_KINDS)

    @property
    def bad(self) -> int:
        return sum(self.counts)

    def skip(self, kind: str, url: str, detail: str) -> None:
        """Count one bad item of `kind` from shard `url`; raise `BadDataError` if the bad share is now too high."""
        index = BAD_KINDS.index(kind)
        self.counts[index] += 1
        self.bad_by_shard[url] = self.bad_by_shard.get(url, 0) + 1
        n = self.bad_by_shard[url] if kind in SHARD_KINDS else self.counts[index]
        if n <= 5 or math.log2(n).is_integer():
            log.warning("skipping %s #%d (%s): %s", kind, self.counts[index], url, detail)
        self._check_rate()

    def _check_rate(self) -> None:
        seen = self.bad + self.decoded
        rate = self.bad / seen
        if seen >= self.policy.min_items and rate > self.policy.max_rate:
            kinds = ", ".join(f"{kind} {n}" for kind, n in zip(BAD_KINDS, self.counts) if n)
            worst = sorted(self.bad_by_shard.items(), key=lambda item: -item[1])[:5]
            shards = ", ".join(f"{url} ({n})" for url, n in worst)
            raise BadDataError(
                f"{rate:.1%} of the {seen} items this data worker met were bad, above data.max_bad_sample_rate="
                f"{self.policy.max_rate}: the dataset looks broken, not noisy. By kind: {kinds}. Shards with the most: "
                f"{shards}. Fix or drop those shards, or raise data.max_bad_sample_rate"
            )

    def take(self) -> torch.Tensor:
        """(K,) long: items skipped per kind (in `BAD_KINDS` order) since the previous call."""
        fresh = torch.tensor([n - r for n, r in zip(self.counts, self._reported)], dtype=torch.long)
        self._reported = list(self.counts)
        return fresh


def bad_sample_metrics(counts: torch.Tensor, prefix: str = "data") -> dict[str, torch.Tensor]:
    """{`<prefix>/bad_samples`: total, `<prefix>/bad_samples/<kind>`: count} from a (K,) count vector."""
    return {
        f"{prefix}/bad_samples": counts.sum(),
        **{f"{prefix}/bad_samples/{kind}": counts[i] for i, kind in enumerate(BAD_KINDS)},
    }
