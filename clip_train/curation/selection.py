"""Which pairs pass the CLIP-score filter and the near-duplicate filter. Indices are positions in the scored set.

The score filter is DataComp's CLIP-score baseline: keep the `keep_fraction` highest-scored pairs (round(fraction ×
N) of them, ties broken by reading order) or every pair scoring at least `threshold`. Deduplication walks the
survivors from the highest score down and drops a pair whose image embedding has cosine at least `threshold` with
an image already kept, so of two near-duplicates the higher-scored one stays.
"""

import torch


def by_score(scores: torch.Tensor, keep_fraction: float | None, threshold: float | None) -> torch.Tensor:
    """Indices (ascending) of the pairs passing the score filter (the fraction's when both are given: `CurationSettings`
    refuses both); all of them when neither is given. scores: (N,) float."""
    if keep_fraction is not None:
        if not 0.0 <= keep_fraction <= 1.0:
            raise ValueError(f"curate.keep_fraction must lie in [0, 1], got {keep_fraction}")
        order = torch.sort(-scores, stable=True).indices
        return order[: round(keep_fraction * len(scores))].sort().values
    if threshold is not None:
        return torch.nonzero(scores >= threshold).flatten()
    return torch.arange(len(scores))


def near_duplicate_pairs(embeddings: torch.Tensor, threshold: float, chunk_rows: int = 4096) -> list[tuple[int, int]]:
    """(i, j), i < j, of the unit-norm rows of `embeddings` (N, D) whose cosine is at least `threshold`: FAISS's exact
    range search where faiss is installed, else a matrix product in chunks of `chunk_rows` rows ((chunk, N) at a time)."""
    try:
        import faiss
    except ImportError:
        faiss = None
    if faiss is not None and len(embeddings):
        index = faiss.IndexFlatIP(embeddings.shape[1])
        vectors = embeddings.float().contiguous().numpy()
        index.add(vectors)
        limits, similarities, neighbours = index.range_search(vectors, threshold - 1e-6)  # FAISS keeps > radius
        return sorted(
            (i, int(j))
            for i in range(len(vectors))
            for j, s in zip(neighbours[limits[i] : limits[i + 1]], similarities[limits[i] : limits[i + 1]])
            if j > i and s >= threshold - 1e-6
        )
    pairs = []
    for start in range(0, len(embeddings), chunk_rows):
        block = embeddings[start : start + chunk_rows] @ embeddings.T
        rows, cols = torch.nonzero(block >= threshold, as_tuple=True)
        pairs.extend((r + start, c) for r, c in zip(rows.tolist(), cols.tolist()) if r + start < c)
    return sorted(pairs)


def without_near_duplicates(
    candidates: torch.Tensor, scores: torch.Tensor, embeddings: torch.Tensor, threshold: float
) -> torch.Tensor:
    """The `candidates` (ascending indices) left once each near-duplicate of a higher-scored kept pair is dropped.
    scores: (N,); embeddings: (N, D) unit norm, both over the whole scored set."""
    order = candidates[torch.sort(-scores[candidates], stable=True).indices]  # highest score first
    earlier: dict[int, list[int]] = {}
    for a, b in near_duplicate_pairs(embeddings[order], threshold):
        earlier.setdefault(b, []).append(a)
    dropped: set[int] = set()
    for position in range(len(order)):
        if any(a not in dropped for a in earlier.get(position, [])):
            dropped.add(position)
    kept = [int(order[p]) for p in range(len(order)) if p not in dropped]
    return torch.tensor(sorted(kept), dtype=torch.long)
