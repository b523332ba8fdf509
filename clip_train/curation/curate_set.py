"""The curation stages in order: score every unit, filter by score, drop near-duplicates, balance, write, report."""

import os
from dataclasses import asdict, dataclass, field

import torch

from clip_train.curation.balancing import balanced, entry_counts, keep_probabilities, matched_entries, read_entries
from clip_train.curation.output import write_kept
from clip_train.curation.report import score_histogram, write_report
from clip_train.curation.scoring import read_unit_scores, score_units
from clip_train.curation.selection import by_score, without_near_duplicates
from clip_train.data.bad_data import BAD_KINDS
from clip_train.inference import ClipModel


@dataclass(frozen=True)
class BalanceSettings:
    """MetaCLIP balancing (`clip_train.curation.balancing`); off while `entries` (a file, one entry a line) is None."""

    entries: str | None = None
    t: float = 20_000
    keep_unmatched: bool = False


@dataclass(frozen=True)
class CurationSettings:
    """The `curate` config node. keep_fraction or threshold: the score filter (neither: keep all); dedup_threshold:
    the image cosine at and above which a lower-scored pair is a near-duplicate (None: no deduplication); seed: the
    balancing draws; batch_size: pairs per model call; samples_per_shard: of the written shards."""

    keep_fraction: float | None = None
    threshold: float | None = None
    dedup_threshold: float | None = None
    balance: BalanceSettings = field(default_factory=BalanceSettings)
    seed: int = 0
    batch_size: int = 128
    samples_per_shard: int = 10_000

    def __post_init__(self):
        """Refuse what would fail only after every pair is scored."""
        if self.keep_fraction is not None and self.threshold is not None:
            raise ValueError("give curate.keep_fraction or curate.threshold, not both")
        if self.balance.entries is not None and not os.path.isfile(self.balance.entries):
            raise FileNotFoundError(f"curate.balance.entries: {self.balance.entries} is not a file")

    @classmethod
    def from_dict(cls, values: dict) -> "CurationSettings":
        return cls(**{**values, "balance": BalanceSettings(**values.get("balance", {}))})


def score_share(
    model: ClipModel, units: list[str], out: str, scorer: str, settings: CurationSettings, rank: int = 0, world: int = 1
) -> int:
    """Score this process's share of `units` (every `world`-th from `rank`) not scored yet; returns how many it scored."""
    return score_units(model, units[rank::world], out, scorer, settings.batch_size)


def _balance(kept: torch.Tensor, captions: list[str], balance: BalanceSettings, seed: int) -> tuple[torch.Tensor, dict]:
    """The `kept` indices left by MetaCLIP balancing, and {entry: {"before": matches, "after": matches}}."""
    entries = read_entries(balance.entries)
    matches = matched_entries([captions[i] for i in kept.tolist()], entries)
    before = entry_counts(matches, len(entries))
    drawn = balanced(keep_probabilities(matches, before, balance.t, balance.keep_unmatched), seed)
    after = entry_counts([found for found, keep in zip(matches, drawn) if keep], len(entries))
    report = {entry: {"before": int(b), "after": int(a)} for entry, b, a in zip(entries, before, after)}
    return kept[torch.from_numpy(drawn)], report


def select(scores: torch.Tensor, embeddings: torch.Tensor, captions: list[str], settings: CurationSettings) -> tuple:
    """(kept indices, ascending; pairs left after each stage; per-entry counts) of the scored set: scores (N,),
    embeddings (N, D) unit norm, captions N strings."""
    kept = by_score(scores, settings.keep_fraction, settings.threshold)
    counts = {"scored": len(scores), "after_score_filter": len(kept)}
    if settings.dedup_threshold is not None:
        kept = without_near_duplicates(kept, scores, embeddings, settings.dedup_threshold)
    counts["after_dedup"] = len(kept)
    entries = {}
    if settings.balance.entries is not None:
        kept, entries = _balance(kept, captions, settings.balance, settings.seed)
    counts["after_balance"] = len(kept)
    return kept, counts, entries


def _score_summary(scores: torch.Tensor) -> dict:
    if not len(scores):
        return {"min": 0.0, "mean": 0.0, "max": 0.0}
    return {"min": float(scores.min()), "mean": float(scores.mean()), "max": float(scores.max())}


def select_and_write(units: list[str], out: str, scorer: str, settings: CurationSettings) -> dict:
    """Read every unit's scores from `out`/scores, select, write the kept shards and the report; returns the report."""
    records = [read_unit_scores(out, unit, scorer) for unit in units]
    missing = [unit for unit, record in zip(units, records) if record is None]
    if missing:
        raise RuntimeError(f"{len(missing)} units have no scores under {out}/scores, e.g. {missing[0]}")
    where = [(r["unit"], key) for r in records for key in r["keys"]]
    scores = torch.cat([r["scores"] for r in records])
    captions = [caption for r in records for caption in r["captions"]]
    kept, counts, entries = select(scores, torch.cat([r["image_embeddings"] for r in records]), captions, settings)

    by_unit: dict[str, dict[str, dict]] = {}
    for i in kept.tolist():
        unit, key = where[i]
        by_unit.setdefault(unit, {})[key] = {"clip_score": float(scores[i]), "source_unit": unit}
    shards, counts["written"] = write_kept(out, by_unit, settings.samples_per_shard)
    mask = torch.zeros(len(scores), dtype=torch.bool)
    mask[kept] = True
    score_histogram(scores, mask, os.path.join(out, "score_histogram.png"))
    report = {
        "units": len(units),
        "counts": counts,
        "bad_samples": dict(zip(BAD_KINDS, torch.stack([r["bad"] for r in records]).sum(0).tolist())),
        "scores": _score_summary(scores),
        "entries": entries,
        "shards": [os.path.basename(path) for path in shards],
        "scorer": scorer,
        "settings": asdict(settings),
    }
    write_report(out, report)
    return report


def curate(model: ClipModel, units: list[str], out: str, scorer: str, settings: CurationSettings) -> dict:
    """Score (skipping units scored before), select and write in one process; returns the report."""
    score_share(model, units, out, scorer, settings)
    return select_and_write(units, out, scorer, settings)
