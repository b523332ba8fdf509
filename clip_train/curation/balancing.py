"""MetaCLIP's balancing (Xu et al. 2023, "Demystifying CLIP Data", Algorithm 1), written from the paper's rule.

Each caption is matched against a list of metadata entries (words or phrases) by substring, case-insensitively. An
entry matched by `count` captions is sampled with probability p = min(1, t / count), so an entry's expected matches
are capped at t while rare entries keep every pair. A pair draws one coin per entry it matches and is kept if any
coin succeeds (MetaCLIP's `balance_sampling`), so it is kept with probability 1 - prod over its entries of (1 - p);
for a pair matching one entry that is p. Pairs matching no entry are dropped, as in MetaCLIP, unless
`keep_unmatched`. Here one uniform draw per pair against that probability gives the same distribution.
"""

import numpy as np


def read_entries(path: str) -> list[str]:
    """The entries of a text file: one word or phrase a line, blank lines skipped, lower-cased."""
    with open(path, encoding="utf-8") as f:
        entries = [line.strip().lower() for line in f if line.strip()]
    if not entries:
        raise ValueError(f"curate.balance.entries: {path} holds no entry (one word or phrase a line)")
    return entries


def matched_entries(captions: list[str], entries: list[str]) -> list[list[int]]:
    """For each caption, the indices of the entries it contains as a substring (case-insensitive)."""
    return [[e for e, entry in enumerate(entries) if entry in caption.lower()] for caption in captions]


def entry_counts(matches: list[list[int]], entry_total: int) -> np.ndarray:
    """(E,) int: how many captions match each entry."""
    counts = np.zeros(entry_total, dtype=np.int64)
    for found in matches:
        counts[found] += 1
    return counts


def keep_probabilities(matches: list[list[int]], counts: np.ndarray, t: float, keep_unmatched: bool) -> np.ndarray:
    """(N,) float: each pair's chance to be kept, 1 - prod_e (1 - min(1, t / counts[e])) over its entries e."""
    entry_p = np.minimum(1.0, t / np.maximum(counts, 1))
    return np.array([1.0 - np.prod(1.0 - entry_p[found]) if found else float(keep_unmatched) for found in matches])


def balanced(probabilities: np.ndarray, seed: int) -> np.ndarray:
    """(N,) bool: one draw per pair against its probability, from a generator seeded with `seed`."""
    return np.random.default_rng(seed).random(len(probabilities)) < probabilities
