"""Alignment, uniformity and modality gap of the embeddings on image-text shards, as an evaluation task.

For unit-norm image embeddings f and caption embeddings g of N pairs:

- `alignment` = mean over pairs of ||f_i - g_i||² (= 2 - 2·cosine; 0: every caption on its image);
- `image_uniformity` = log mean over i ≠ j of exp(-2 ||f_i - f_j||²), and `text_uniformity`
  likewise for g: how evenly the embeddings spread over the sphere (more negative: more uniform).
  Wang & Isola (ICML 2020) show contrastive losses optimise these two; a collapsed tower scores 0;
- `modality_gap` = ||mean f - mean g||: how far apart the two modalities' clouds sit
  (Liang et al., NeurIPS 2022), which low temperatures and the initialisation keep open.

Each rank embeds every world-th shard; uniformity pairs this rank's embeddings with every
rank's (gathered), a block of rows at a time, and the sums are added over ranks.
"""

import math
from collections.abc import Sequence

import torch

from clip_train.data.shards import expand_shards
from clip_train.distributed import all_reduce_sum, gather_uneven
from clip_train.eval.readers import embed_shards, embedded_validation_urls
from clip_train.inference import ClipModel

ROWS_PER_BLOCK = 1024  # uniformity holds a (block, N) kernel at a time


def _pair_kernel_sum(local: torch.Tensor) -> torch.Tensor:
    """Σ exp(-2 ||x_i - x_j||²) over this rank's rows i and every rank's rows j ≠ i; float64, a scalar.

    local: (N_r, D) unit-norm; every rank must call this.
    """
    local = local.double()
    everyone, first = gather_uneven(local)
    total = everyone.new_zeros(())
    for start in range(0, local.shape[0], ROWS_PER_BLOCK):
        rows = local[start : start + ROWS_PER_BLOCK]
        kernel = torch.exp(-2 * (2 - 2 * rows @ everyone.T).clamp_min(0))  # ||x - y||² = 2 - 2 x·y on the sphere
        own = torch.arange(rows.shape[0], device=rows.device)
        kernel[own, first + start + own] = 0  # i = j is no pair
        total += kernel.sum()
    return total


class EmbeddingGeometryTask:
    """Alignment, uniformity and modality gap on `shards` (a brace pattern or a list; None: the embedded
    synthetic validation split, written into `cache_dir` on first use), one caption per image.
    batch_size, num_workers: the shard loader's; progress: a progress bar on rank 0.
    """

    def __init__(
        self,
        shards: str | Sequence[str] | None = None,
        cache_dir: str | None = None,
        batch_size: int = 128,
        num_workers: int = 0,
        progress: bool = False,
    ):
        self.urls = expand_shards(shards, "embedding geometry shards") if shards else None
        self.cache_dir = cache_dir
        self.batch_size, self.num_workers, self.progress = batch_size, num_workers, progress

    @torch.no_grad()
    def run(self, model: ClipModel, rank: int, world: int) -> dict[str, float]:
        """The four numbers over all ranks' shards; every rank must call this and gets the same."""
        urls = self.urls or embedded_validation_urls(self.cache_dir)
        images, texts, _ = embed_shards(model, urls, False, rank, world, self.batch_size, self.num_workers, self.progress)
        images, texts = images.double(), texts.double()
        scalars = [
            ((images - texts) ** 2).sum(),
            images.new_tensor(len(images)),
            _pair_kernel_sum(images),
            _pair_kernel_sum(texts),
        ]
        sums = all_reduce_sum(torch.cat([torch.stack(scalars), images.sum(dim=0), texts.sum(dim=0)]))
        distance, count, image_kernel, text_kernel = (float(value) for value in sums[:4])
        if count < 2:
            raise ValueError(f"embedding geometry needs at least two image-caption pairs; the shards hold {count:.0f}")
        image_mean, text_mean = sums[4:].view(2, -1) / count
        pairs = count * (count - 1)
        return {
            "alignment": distance / count,
            "image_uniformity": math.log(image_kernel / pairs),
            "text_uniformity": math.log(text_kernel / pairs),
            "modality_gap": float((image_mean - text_mean).norm()),
        }
