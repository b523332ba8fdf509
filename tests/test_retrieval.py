"""Retrieval metrics against hand-computed values and a naive loop."""

import math

import pytest
import torch

from clip_train.eval.retrieval import positive_ranks, retrieval_metrics
from clip_train.objectives import infonce_loss


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
    assert metrics["loss"] == pytest.approx(float(infonce_loss(images, texts, torch.tensor(0.0))))


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
    for chunked, whole in zip(positive_ranks(images, texts, positives, positives, chunk=7),
                              positive_ranks(images, texts, positives, positives)):  # fmt: skip
        torch.testing.assert_close(chunked, whole)
    assert metrics["loss"] == pytest.approx(float(infonce_loss(images, texts, torch.tensor(math.log(10)))), rel=1e-5)


def test_hand_computed_example_with_several_captions_per_image():
    # image A = e0 has captions t0, t1; image B = e1 has captions t2, t3. score(image, text) = text[image's axis]
    images = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    texts = torch.tensor([[0.6, 0.8, 0.0], [0.0, 0.0, 1.0], [0.8, 0.6, 0.0], [0.0, 1.0, 0.0]])
    owners = torch.tensor([0, 0, 1, 1])
    metrics = retrieval_metrics(images, texts, torch.tensor(0.0), ks=(1, 2), text_to_image=owners)
    # A scores (.6, 0, .8, 0): its best caption t0 (.6) is beaten by t2 -> rank 1; B's best, t3 (1.0), comes first
    assert metrics["image_to_text_R@1"] == pytest.approx(1 / 2)
    assert metrics["image_to_text_R@2"] == pytest.approx(1.0)
    # t0 prefers B (.8 > .6): rank 1; t1 ties A and B at 0: first half the time; t2 prefers A: rank 1; t3: rank 0
    assert metrics["text_to_image_R@1"] == pytest.approx(1.5 / 4)
    assert metrics["text_to_image_R@2"] == pytest.approx(1.0)
    # matching cosines .6, 0, .6, 1 (mean .55); non-matching .8, 0, .8, 0 (mean .4)
    assert metrics["alignment_gap"] == pytest.approx(0.15)
    assert "loss" not in metrics  # InfoNCE is defined for pairs only


def test_one_caption_per_image_given_as_owners_equals_pairs():
    generator = torch.Generator().manual_seed(1)
    images = torch.nn.functional.normalize(torch.randn(20, 6, generator=generator), dim=-1)
    texts = torch.nn.functional.normalize(images + torch.randn(20, 6, generator=generator), dim=-1)
    as_pairs = retrieval_metrics(images, texts, torch.tensor(0.0))
    as_owners = retrieval_metrics(images, texts, torch.tensor(0.0), text_to_image=torch.arange(20))
    assert as_owners == pytest.approx({k: v for k, v in as_pairs.items() if k != "loss"})


def test_an_image_without_captions_never_hits_and_ranks_after_every_key():
    images = torch.eye(2)
    texts = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # both captions are image 0's, tied with each other
    metrics = retrieval_metrics(images, texts, torch.tensor(0.0), ks=(1, 5), text_to_image=torch.tensor([0, 0]))
    assert metrics["image_to_text_R@1"] == metrics["image_to_text_R@5"] == 0.5  # image 1 misses even at k > 2 keys
    assert metrics["image_to_text_mean_rank"] == pytest.approx((1 + 3) / 2)  # image 1 ranks after both keys: 3
    assert metrics["image_to_text_median_rank"] == 2  # the median of 1 and 3
