"""Image↔text retrieval over a whole evaluation set, shared out across ranks.

Each rank scores only its own queries against all gathered keys, so memory is
local × global, never global², and no rank idles while another works. Counts are summed
across ranks at the end. A set may hold several captions per image (COCO-style): an image
query's hit is any of its captions, a caption query's hit is its image. Ties with a positive
count in its favour (a rank is the number of keys scoring strictly higher than the best positive).
"""

import torch

from clip_train.distributed import all_reduce_sum, gather_uneven


@torch.no_grad()
def ranks_of_positives(queries: torch.Tensor, keys: torch.Tensor, positives: torch.Tensor, chunk: int = 1024):
    """queries (Q, D), keys (N, D), positives (Q,) key indices -> (Q,) ranks, 0 = retrieved first."""
    ranks = []
    for start in range(0, queries.shape[0], chunk):
        scores = queries[start : start + chunk] @ keys.T
        positive = scores.gather(1, positives[start : start + chunk, None])
        ranks.append((scores > positive).sum(dim=1))
    return torch.cat(ranks) if ranks else positives.new_zeros(0)


@torch.no_grad()
def ranks_of_best_positives(
    queries: torch.Tensor, keys: torch.Tensor, query_ids: torch.Tensor, key_owners: torch.Tensor, chunk: int = 1024
) -> torch.Tensor:
    """queries (Q, D) with ids (Q,); keys (N, D), key j a positive of the query whose id is key_owners[j].

    -> (Q,) the rank of each query's best-scoring positive. A query with no positive gets rank N.
    """
    ranks = []
    for start in range(0, queries.shape[0], chunk):
        scores = queries[start : start + chunk] @ keys.T
        positive = key_owners[None, :] == query_ids[start : start + chunk, None]
        best = scores.masked_fill(~positive, float("-inf")).amax(dim=1, keepdim=True)
        ranks.append(torch.where(positive.any(dim=1), (scores > best).sum(dim=1), keys.shape[0]))
    return torch.cat(ranks) if ranks else query_ids.new_zeros(0)


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

    Returns image_to_text_R@k and text_to_image_R@k (fractions of images and of captions),
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
    image_ranks = ranks_of_best_positives(image_features, all_texts, image_ids, caption_owners)
    text_ranks = ranks_of_positives(text_features, all_images, text_to_image + first_image)
    num_images, num_texts = all_images.shape[0], all_texts.shape[0]
    matching = (image_features[text_to_image] * text_features).sum()
    sums = [*((image_ranks < k).sum() for k in ks), *((text_ranks < k).sum() for k in ks), matching]
    if pairs:
        scale = logit_scale.float().exp()
        image_loss = _loss_sum(image_features, all_texts, image_ids, scale)
        sums.append(image_loss + _loss_sum(text_features, all_images, image_ids, scale))
    sums = all_reduce_sum(torch.stack(sums).double())
    metrics = {f"image_to_text_R@{k}": float(sums[i]) / num_images for i, k in enumerate(ks)}
    metrics |= {f"text_to_image_R@{k}": float(sums[len(ks) + i]) / num_texts for i, k in enumerate(ks)}
    matching = float(sums[2 * len(ks)])
    every_pair = float(all_images.sum(0).double() @ all_texts.sum(0).double())
    non_matching_count = max(num_images * num_texts - num_texts, 1)
    metrics["alignment_gap"] = matching / max(num_texts, 1) - (every_pair - matching) / non_matching_count
    if pairs:
        metrics["loss"] = float(sums[-1]) / (2 * num_images)
    return metrics
