"""Image↔text retrieval over a whole evaluation set, shared out across ranks.

Each rank scores only its own queries against all gathered keys, so memory is
local × global, never global², and no rank idles while another works. Counts are summed
across ranks at the end. A set may hold several captions per image (COCO-style): an image
query's hit is any of its captions, a caption query's hit is its image.

Ties are scored at their expectation under a uniformly random order of the tied keys, so a
collapsed model (every feature equal) scores chance, R@k = k/N, and repeated captions do not
inflate recall. A query's rank is that of its best-ranked positive: `higher` keys score above
its best positive, and `tied` non-positives and m positives (the best among them) score equal
to it. Its recall@k is P(higher + X < k), X the number of tied non-positives placed before the
first tied positive; its expected rank (1-based) is higher + E[X] + 1 = higher + tied/(m+1) + 1.
The mean rank averages the expected ranks of all queries, and the median rank is the median of
the expected ranks rounded down (OpenCLIP's floor(median) + 1 for whole ranks, with which these
metrics agree exactly when there are no ties).

`RetrievalTask` runs this on image-text shards as an evaluation task (`eval.tasks.retrieval`); each rank
reads every world-th shard. `ValidationRetrievalTask` runs it on the training run's validation batches (`val/...`).
"""

from collections.abc import Sequence
from typing import NamedTuple

import torch

from clip_train.data.shards import expand_shards
from clip_train.distributed import all_reduce_sum, gather_uneven
from clip_train.eval.readers import embed_shards, embedded_validation_urls
from clip_train.inference import ClipModel


class PositiveRanks(NamedTuple):
    """Where each of Q queries' best-scoring positive lands among the keys, ties kept apart; (Q,) long tensors.

    higher: keys scoring strictly above the best positive.
    tied: non-positive keys scoring equal to it.
    tied_positives: positives scoring equal to it, itself included; 0 for a query without positives
        (then `higher` counts every key, and the query never hits).
    """

    higher: torch.Tensor
    tied: torch.Tensor
    tied_positives: torch.Tensor

    def recall_at(self, k: int) -> torch.Tensor:
        """(Q,) float64: P(a positive is among the first k keys) over random orders of the tied keys.

        With j = k - higher places left, the query misses iff the first j of the tied + m tied keys
        are all non-positives: C(tied, j) / C(tied + m, j) = Π_{i=1..m} (tied - j + i) / (tied + i),
        a product of m factors (m is at most the captions of an image) rather than of j.
        """
        places = (k - self.higher).double()
        tied, positives = self.tied.double(), self.tied_positives
        most = int(positives.max()) if len(positives) else 0
        i = torch.arange(1, most + 1, dtype=torch.float64, device=tied.device)
        factors = (tied[:, None] - places[:, None] + i) / (tied[:, None] + i)
        all_before = torch.where(i <= positives[:, None], factors, 1.0).prod(dim=1)
        miss = torch.where(places > tied, 0.0, all_before)  # fewer non-positives than places: a positive gets in
        miss = torch.where((places <= 0) | (positives == 0), 1.0, miss)
        return 1.0 - miss

    def expected_rank(self) -> torch.Tensor:
        """(Q,) float64 1-based rank of the first positive: m positives split the tied others into m + 1 gaps."""
        return self.higher.double() + self.tied.double() / (self.tied_positives.double() + 1) + 1


@torch.no_grad()
def positive_ranks(
    queries: torch.Tensor, keys: torch.Tensor, query_ids: torch.Tensor, key_owners: torch.Tensor, chunk: int = 1024
) -> PositiveRanks:
    """queries (Q, D) with ids (Q,); keys (N, D), key j a positive of the query whose id is key_owners[j]."""
    parts = []
    for start in range(0, queries.shape[0], chunk):
        scores = queries[start : start + chunk] @ keys.T
        positive = key_owners[None, :] == query_ids[start : start + chunk, None]
        best = scores.masked_fill(~positive, float("-inf")).amax(dim=1, keepdim=True)
        at_best = scores == best
        parts.append(((scores > best).sum(dim=1), (at_best & ~positive).sum(dim=1), (at_best & positive).sum(dim=1)))
    if not parts:
        return PositiveRanks(*(query_ids.new_zeros(0, dtype=torch.long) for _ in range(3)))
    return PositiveRanks(*(torch.cat(part) for part in zip(*parts)))


def _rank_summary(ranks: PositiveRanks) -> tuple[float, float]:
    """(mean, median) over every rank's queries of the expected ranks; the median floored (see the module docstring).

    The median needs every query's rank, so the (Q_r,) expected ranks are gathered: 8 bytes a query.
    """
    everyone, _ = gather_uneven(ranks.expected_rank())
    ordered = everyone.sort().values
    middle = (ordered[(len(ordered) - 1) // 2] + ordered[len(ordered) // 2]) / 2  # numpy's median for even counts
    return float(everyone.mean()), float(middle.floor())


@torch.no_grad()
def _loss_sum(queries: torch.Tensor, keys: torch.Tensor, positives: torch.Tensor, scale: torch.Tensor, chunk=1024):
    """Σ over queries of the cross-entropy of softmax(scale · q·K) at the positive."""
    total = queries.new_zeros(())
    for start in range(0, queries.shape[0], chunk):
        logits = scale * queries[start : start + chunk] @ keys.T
        total += torch.nn.functional.cross_entropy(logits, positives[start : start + chunk], reduction="sum")
    return total


@torch.no_grad()
def retrieval_metrics(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    ks=(1, 5, 10),
    text_to_image: torch.Tensor | None = None,
) -> dict[str, float]:
    """This rank's share of the set -> metrics over all ranks' shares. Every rank must call this.

    image_features: (I_r, D) unit-norm features of this rank's images.
    text_features: (T_r, D) unit-norm features of their captions.
    text_to_image: (T_r,) the index in this rank's images of each caption's image; None for
        pairs (caption i describes image i), the training and validation case.

    Returns image_to_text_R@k and text_to_image_R@k (fractions of images and of captions, ties at
    their expectation), `{image_to_text,text_to_image}_{mean,median}_rank` (1-based, see the module docstring),
    `alignment_gap` (mean cosine of matching image-caption pairs minus that of non-matching ones)
    and, for pairs, `loss`: the symmetric InfoNCE of the whole set at `logit_scale`, comparable
    across batch sizes and world sizes.
    """
    pairs = text_to_image is None
    image_features, text_features = image_features.float(), text_features.float()
    if pairs:
        text_to_image = torch.arange(text_features.shape[0], device=text_features.device)
    all_images, first_image = gather_uneven(image_features)
    all_texts, _ = gather_uneven(text_features)
    caption_owners, _ = gather_uneven(text_to_image + first_image)  # (T,) global image index of every caption
    image_ids = torch.arange(image_features.shape[0], device=image_features.device) + first_image
    num_images, num_texts = all_images.shape[0], all_texts.shape[0]
    image_ranks = positive_ranks(image_features, all_texts, image_ids, caption_owners)
    all_image_ids = torch.arange(num_images, device=image_features.device)
    text_ranks = positive_ranks(text_features, all_images, text_to_image + first_image, all_image_ids)
    matching = (image_features[text_to_image] * text_features).sum().double()
    sums = [*(image_ranks.recall_at(k).sum() for k in ks), *(text_ranks.recall_at(k).sum() for k in ks), matching]
    if pairs:
        scale = logit_scale.float().exp()
        image_loss = _loss_sum(image_features, all_texts, image_ids, scale)
        sums.append((image_loss + _loss_sum(text_features, all_images, image_ids, scale)).double())
    sums = all_reduce_sum(torch.stack(sums))
    metrics = {f"image_to_text_R@{k}": float(sums[i]) / num_images for i, k in enumerate(ks)}
    metrics |= {f"text_to_image_R@{k}": float(sums[len(ks) + i]) / num_texts for i, k in enumerate(ks)}
    for direction, ranks in (("image_to_text", image_ranks), ("text_to_image", text_ranks)):
        metrics[f"{direction}_mean_rank"], metrics[f"{direction}_median_rank"] = _rank_summary(ranks)
    matching = float(sums[2 * len(ks)])
    every_pair = float(all_images.sum(0).double() @ all_texts.sum(0).double())
    non_matching_count = max(num_images * num_texts - num_texts, 1)
    metrics["alignment_gap"] = matching / max(num_texts, 1) - (every_pair - matching) / non_matching_count
    if pairs:
        metrics["loss"] = float(sums[-1]) / (2 * num_images)
    return metrics


class RetrievalTask:
    """Retrieval on `shards` (a brace pattern or a list; None: the embedded synthetic validation split,
    written into `cache_dir` on first use). With `multi_caption` every line of a sample's caption is one
    caption of its image (COCO-style), and an image query hits if any of them is retrieved.
    batch_size, num_workers: the shard loader's; progress: a progress bar on rank 0.
    """

    def __init__(
        self,
        shards: str | Sequence[str] | None = None,
        multi_caption: bool = False,
        cache_dir: str | None = None,
        batch_size: int = 128,
        num_workers: int = 0,
        progress: bool = False,
    ):
        self.urls = expand_shards(shards, "retrieval shards") if shards else None  # a missing shard fails here, early
        self.multi_caption, self.cache_dir = multi_caption, cache_dir
        self.batch_size, self.num_workers, self.progress = batch_size, num_workers, progress

    @torch.no_grad()
    def run(self, model: ClipModel, rank: int, world: int) -> dict[str, float]:
        urls = self.urls or embedded_validation_urls(self.cache_dir)
        embedded = embed_shards(model, urls, self.multi_caption, rank, world, self.batch_size, self.num_workers, self.progress)
        owners = embedded.owners if self.multi_caption else None
        return retrieval_metrics(embedded.images, embedded.texts, model.logit_scale, text_to_image=owners)


class ValidationRetrievalTask:
    """Retrieval on the training run's validation batches (a `ValidationTask`, `val/...` metrics): every rank keeps
    the embeddings the module computed for its own batches, and `run` scores them over the union of all ranks at
    the model's temperature; a rank whose share was empty still joins the collectives.
    """

    def __init__(self):
        self._features: list[tuple[torch.Tensor, torch.Tensor]] = []

    def start(self, rank: int, world: int) -> None:
        self._features = []

    def observe(self, model: ClipModel, batch: dict[str, torch.Tensor], features: dict[str, torch.Tensor]) -> None:
        self._features.append((features["image_features"], features["text_features"]))

    def run(self, model: ClipModel, rank: int, world: int) -> dict[str, float]:
        if self._features:
            image_features, text_features = (torch.cat(parts) for parts in zip(*self._features))
        else:  # this rank's share of the validation shards was empty
            image_features = text_features = torch.zeros(0, model.embed_dim, device=model.device)
        self._features = []
        return retrieval_metrics(image_features, text_features, model.logit_scale)
