"""Image↔text retrieval on image-text shards as an evaluation task (`eval.tasks.retrieval`).

Reports recall@1/5/10 both ways, mean and median ranks, the alignment gap and, for one caption
per image, the InfoNCE `loss` (`clip_train.eval.retrieval.retrieval_metrics`). Each rank reads
every world-th shard. During training the module scores its validation set itself (`val/...`),
so this task is for `python -m clip_train.evaluate` or for other sets.
"""

from collections.abc import Sequence

import torch

from clip_train.data.shards import expand_shards
from clip_train.eval.readers import embed_shards, embedded_validation_urls
from clip_train.eval.retrieval import retrieval_metrics
from clip_train.inference import ClipModel


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
        return retrieval_metrics(embedded.images, embedded.texts, model.model.logit_scale.detach(), text_to_image=owners)
