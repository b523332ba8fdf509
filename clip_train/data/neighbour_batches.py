"""Batch composition: put caption-word neighbours in the same batch, so that in-batch negatives are hard.

In a random batch of the embedded scenes, colour, place, count and size already tell captions
apart, so nothing forces a model to look at shapes. Here a share of every batch comes in
couples: a pair and, from a pool of the next pairs of the (already shuffled) stream, the one
whose caption shares the most words with it (Jaccard similarity of the word sets; captions with
the very same words are skipped, as they may well describe the same image). On the embedded
scenes such a neighbour is mostly the same scene with one attribute changed ("a small red
circle on the left" next to "a small red square on the left"); on web data, caption-word
neighbours are a cheap stand-in for nearest neighbours in an embedding.

It only reorders the stream: every pair is still yielded once, so exactly-once epochs, batch
counts and resumes are unchanged. Cost, in the data workers: for each of the share × B / 2
couples of a batch, one set comparison with each of the `pool` pairs waiting (B = 64, share 0.5,
pool 1000: 16,000 comparisons of word sets per batch, a few milliseconds), and `pool` decoded
pairs held in memory on top of the shuffle buffer.
"""

import re
from collections.abc import Iterator


def caption_words(caption: str) -> frozenset[str]:
    return frozenset(re.findall(r"[a-z0-9]+", caption.lower()))


def _similarity(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b)


def neighbour_batches(pairs: Iterator[tuple], batch_size: int, share: float, pool: int) -> Iterator[tuple]:
    """`pairs` ((image, caption, key) tuples) reordered so that each run of `batch_size` consecutive pairs
    opens with round(share × batch_size / 2) couples of caption neighbours, then pairs in stream order.
    A pair whose waiting companions all have its very words opens no couple."""
    couples = round(share * batch_size / 2)
    waiting: list[tuple[tuple, frozenset[str]]] = []
    pairs = iter(pairs)
    while True:
        while len(waiting) < max(pool, batch_size):
            pair = next(pairs, None)
            if pair is None:
                break
            waiting.append((pair, caption_words(pair[1])))
        if not waiting:
            return
        batch = []
        for _ in range(couples):
            if len(waiting) < 2:
                break
            anchor, words = waiting.pop(0)
            scores = [(_similarity(words, other) if other != words else -1.0) for _, other in waiting]
            best = max(range(len(scores)), key=scores.__getitem__)
            batch += [anchor, waiting.pop(best)[0]] if scores[best] >= 0 else [anchor]
        while len(batch) < batch_size and waiting:
            batch.append(waiting.pop(0)[0])
        yield from batch
