"""Retrieval metrics against hand-computed values and a naive loop."""

import math

import pytest
import torch

from clip_train.eval.retrieval import ranks_of_positives, retrieval_metrics
from clip_train.loss import ContrastiveLoss


def test_hand_computed_example():
    # image i is the basis vector e_i, so score(image i, text j) = text_j[i]:
    #   S = [[1, .8, 0], [0, .6, .8], [0, 0, .6]]
    images = torch.eye(3)
    texts = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.8, 0.6]])
    metrics = retrieval_metrics(images, texts, torch.tensor(0.0), ks=(1, 2))
    # image rows: positives 1, .6 (beaten by .8), .6 -> ranks 0, 1, 0
    assert metrics["image_to_text_R@1"] == pytest.approx(2 / 3)
    assert metrics["image_to_text_R@2"] == pytest.approx(1.0)
    # text columns: (1,0,0) -> 0; (.8,.6,0) -> 1; (0,.8,.6) -> 1
    assert metrics["text_to_image_R@1"] == pytest.approx(1 / 3)
    assert metrics["text_to_image_R@2"] == pytest.approx(1.0)
    # matching mean (1+.6+.6)/3, non-matching mean (3.8-2.2)/6
    assert metrics["alignment_gap"] == pytest.approx(2.2 / 3 - 1.6 / 6)
    assert metrics["loss"] == pytest.approx(float(ContrastiveLoss()(images, texts, torch.tensor(0.0))))


def naive_recall(similarity: torch.Tensor, k: int) -> float:
    hits = 0
    for i, row in enumerate(similarity.tolist()):
        order = sorted(range(len(row)), key=lambda j: -row[j])
        hits += i in order[:k]
    return hits / similarity.shape[0]


def test_random_features_match_a_naive_loop_and_chunking_is_invisible():
    generator = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(50, 8, generator=generator), dim=-1)
    texts = torch.nn.functional.normalize(images + 0.8 * torch.randn(50, 8, generator=generator), dim=-1)
    metrics = retrieval_metrics(images, texts, torch.tensor(math.log(10)))
    similarity = images @ texts.T
    for k in (1, 5, 10):
        assert metrics[f"image_to_text_R@{k}"] == pytest.approx(naive_recall(similarity, k))
        assert metrics[f"text_to_image_R@{k}"] == pytest.approx(naive_recall(similarity.T, k))
    positives = torch.arange(50)
    torch.testing.assert_close(
        ranks_of_positives(images, texts, positives, chunk=7), ranks_of_positives(images, texts, positives)
    )
    assert metrics["loss"] == pytest.approx(float(ContrastiveLoss()(images, texts, torch.tensor(math.log(10)))), rel=1e-5)
