"""Image↔text retrieval over a whole evaluation set, shared out across ranks.

Each rank scores only its own queries against all gathered keys, so memory is
local × global, never global², and no rank idles while another works. Counts are summed
across ranks at the end. Pair i's positive is key i; ties with the positive count in its
favour (a rank is the number of keys scoring strictly higher).
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
def _loss_sum(queries: torch.Tensor, keys: torch.Tensor, positives: torch.Tensor, scale: torch.Tensor, chunk=1024):
    """Σ over queries of the cross-entropy of softmax(scale · q·K) at the positive."""
    total = queries.new_zeros(())
    for start in range(0, queries.shape[0], chunk):
        logits = scale * queries[start : start + chunk] @ keys.T
        total += torch.nn.functional.cross_entropy(logits, positives[start : start + chunk], reduction="sum")
    return total


@torch.no_grad()
def retrieval_metrics(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor, ks=(1, 5, 10)
) -> dict[str, float]:
    """This rank's (B_r, D) unit-norm features of B_r pairs -> metrics over all ranks' pairs.

    Returns image_to_text_R@k and text_to_image_R@k (fractions), `loss` (the symmetric
    InfoNCE of the whole set at `logit_scale`, comparable across batch sizes and world sizes)
    and `alignment_gap`, the mean cosine of matching pairs minus that of non-matching pairs.
    Every rank must call this, with its own share.
    """
    image_features, text_features = image_features.float(), text_features.float()
    all_images, first = gather_uneven(image_features)
    all_texts, _ = gather_uneven(text_features)
    total = all_images.shape[0]
    positives = torch.arange(image_features.shape[0], device=image_features.device) + first
    image_ranks = ranks_of_positives(image_features, all_texts, positives)
    text_ranks = ranks_of_positives(text_features, all_images, positives)
    scale = logit_scale.float().exp()
    sums = torch.stack(
        [*((image_ranks < k).sum() for k in ks), *((text_ranks < k).sum() for k in ks)]
        + [_loss_sum(image_features, all_texts, positives, scale) + _loss_sum(text_features, all_images, positives, scale)]
        + [(image_features * text_features).sum()]
    ).double()
    sums = all_reduce_sum(sums)
    metrics = {f"image_to_text_R@{k}": float(sums[i]) / total for i, k in enumerate(ks)}
    metrics |= {f"text_to_image_R@{k}": float(sums[len(ks) + i]) / total for i, k in enumerate(ks)}
    metrics["loss"] = float(sums[2 * len(ks)]) / (2 * total)
    matching = float(sums[2 * len(ks) + 1])
    every_pair = float(all_images.sum(0).double() @ all_texts.sum(0).double())
    metrics["alignment_gap"] = matching / total - (every_pair - matching) / max(total * (total - 1), 1)
    return metrics
