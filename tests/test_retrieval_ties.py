"""Retrieval with tied scores: exact expectations over every tie-breaking order of the keys, a collapsed
model at chance, OpenCLIP's ranking formula on tie-free features, and 2 gloo processes against one."""

import itertools
import math
import statistics
from fractions import Fraction

import pytest
import torch
from gloo import on_gloo_ranks

from clip_train.eval.retrieval import retrieval_metrics

KS = (1, 2, 3)


def brute_force(scores: list[list[int]], positives: list[set[int]]) -> dict:
    """Exact R@k, mean rank and median rank of one direction: every query's keys sorted by score, ties broken by
    each of the n! orders of the keys in turn; a query's rank is that of its first positive (1-based)."""
    keys = len(scores[0])
    orders = list(itertools.permutations(range(keys)))
    hits, expected_ranks = dict.fromkeys(KS, Fraction(0)), []
    for row, hit in zip(scores, positives):
        total = Fraction(0)
        for order in orders:
            ranking = sorted(range(keys), key=lambda j: (-row[j], order[j]))
            first = min(ranking.index(j) for j in hit)
            total += first + 1
            for k in KS:
                hits[k] += Fraction(int(first < k), len(orders))
        expected_ranks.append(total / len(orders))
    return {
        **{f"R@{k}": hits[k] / len(scores) for k in KS},
        "mean_rank": sum(expected_ranks) / len(expected_ranks),
        "median_rank": math.floor(statistics.median(expected_ranks)),
    }


def planted_ties(seed: int, images: int, texts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of small whole numbers, so that exact score ties are everywhere and float32 sums stay exact."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 2, (images, 2), generator=generator).float(),
            torch.randint(0, 3, (texts, 2), generator=generator).float())  # fmt: skip


def expected_by_brute_force(images: torch.Tensor, texts: torch.Tensor, owners: list[int]) -> dict:
    scores = (images @ texts.T).long().tolist()
    image_to_text = brute_force(scores, [{t for t, o in enumerate(owners) if o == i} for i in range(len(images))])
    text_to_image = brute_force([list(column) for column in zip(*scores)], [{o} for o in owners])
    return {f"image_to_text_{name}": value for name, value in image_to_text.items()} | {
        f"text_to_image_{name}": value for name, value in text_to_image.items()
    }


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("owners", [[0, 1, 2, 3, 4, 5], [0, 0, 1, 1, 1, 2]], ids=["pairs", "captions"])
def test_planted_ties_score_their_expectation_over_every_tie_breaking_order(seed, owners):
    images, texts = planted_ties(seed, max(owners) + 1, len(owners))
    metrics = retrieval_metrics(images, texts, torch.tensor(0.0), ks=KS, text_to_image=torch.tensor(owners))
    for name, value in expected_by_brute_force(images, texts, owners).items():
        assert metrics[name] == pytest.approx(float(value), abs=1e-12), name


def test_a_collapsed_model_scores_chance():
    same = torch.zeros(10, 4)
    same[:, 0] = 1.0
    metrics = retrieval_metrics(same, same, torch.tensor(0.0), ks=(1, 5, 10))
    for direction in ("image_to_text", "text_to_image"):
        for k in (1, 5, 10):
            assert metrics[f"{direction}_R@{k}"] == pytest.approx(k / 10)
        assert metrics[f"{direction}_mean_rank"] == pytest.approx(5.5)  # (1 + ... + 10) / 10
        assert metrics[f"{direction}_median_rank"] == 5  # every expected rank is 5.5, floored
    # 4 images with 3 captions each: an image hits at k unless its 3 captions all fall after the first k of 12
    owners = torch.arange(4).repeat_interleave(3)
    metrics = retrieval_metrics(same[:4], same[:1].expand(12, 4), torch.tensor(0.0), ks=(1, 5), text_to_image=owners)
    assert metrics["image_to_text_R@1"] == pytest.approx(3 / 12)
    assert metrics["image_to_text_R@5"] == pytest.approx(1 - math.comb(9, 5) / math.comb(12, 5))
    assert metrics["image_to_text_mean_rank"] == pytest.approx(1 + 9 / 4)  # 9 others, 4 gaps around 3 positives
    assert metrics["text_to_image_R@1"] == pytest.approx(1 / 4)
    assert metrics["text_to_image_mean_rank"] == pytest.approx(2.5)


def open_clip_formula(images: torch.Tensor, texts: torch.Tensor, ks) -> dict:
    """OpenCLIP's get_clip_metrics for pairs, restated: a query's rank is where its positive lands in the argsort."""
    metrics = {}
    logits = images @ texts.T
    for direction, rows in (("image_to_text", logits), ("text_to_image", logits.T)):
        ranking = torch.argsort(rows, dim=1, descending=True)
        preds = torch.where(ranking == torch.arange(len(rows))[:, None])[1].double()
        metrics[f"{direction}_mean_rank"] = float(preds.mean()) + 1
        metrics[f"{direction}_median_rank"] = math.floor(float(preds.quantile(0.5))) + 1  # numpy.median
        metrics |= {f"{direction}_R@{k}": float((preds < k).double().mean()) for k in ks}
    return metrics


@pytest.mark.parametrize("pairs", [40, 41])
def test_tie_free_features_agree_with_open_clip(pairs):
    generator = torch.Generator().manual_seed(pairs)
    images = torch.nn.functional.normalize(torch.randn(pairs, 8, generator=generator), dim=-1)
    texts = torch.nn.functional.normalize(images + torch.randn(pairs, 8, generator=generator), dim=-1)
    metrics = retrieval_metrics(images, texts, torch.tensor(0.0), ks=(1, 5, 10))
    for name, value in open_clip_formula(images, texts, (1, 5, 10)).items():
        assert metrics[name] == pytest.approx(value), name


def _uneven_share(rank: int, world: int) -> dict:
    """Rank 0 holds image 0 and its 2 captions, rank 1 images 1-2 and their 4 captions (local caption owners)."""
    images, texts = planted_ties(1, 3, 6)
    share = (slice(0, 1), slice(0, 2), [0, 0]) if rank == 0 else (slice(1, 3), slice(2, 6), [0, 0, 0, 1])
    return retrieval_metrics(images[share[0]], texts[share[1]], torch.tensor(0.0), ks=KS, text_to_image=torch.tensor(share[2]))


@pytest.mark.slow
def test_two_processes_with_ties_and_several_captions_score_like_one(tmp_path):
    images, texts = planted_ties(1, 3, 6)
    owners = [0, 0, 1, 1, 1, 2]
    expected = retrieval_metrics(images, texts, torch.tensor(0.0), ks=KS, text_to_image=torch.tensor(owners))
    assert expected == pytest.approx({k: float(v) for k, v in expected_by_brute_force(images, texts, owners).items()} | {
        "alignment_gap": expected["alignment_gap"]})  # fmt: skip
    for got in on_gloo_ranks(_uneven_share, 2, tmp_path):
        assert got == pytest.approx(expected, rel=1e-12)
