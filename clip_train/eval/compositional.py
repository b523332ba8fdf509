"""Compositional evaluation: does an image prefer its true caption to the same words recombined?

For every image, its true caption is scored (cosine) against one hard-negative caption of each
kind that applies to it; the accuracy of a kind is the share of images whose true caption
scores higher (a tie counts one half). One comparison of two captions: chance is 0.5 for every
kind. A model that reads captions as bags of words (Yuksekgonul et al., ICLR 2023) sits at
0.5 on `swap_attributes`, `relation` and `word_order`, whose negatives use exactly the true
caption's words; `colour`, `shape` and `count` replace one word and measure that attribute.

Two sources of images and negatives:

- the embedded validation scenes (`shards` unset): drawn in memory from their scene
  descriptions, with exact negatives (`clip_train.eval.scene_negatives`); of 512 scenes about
  half hold two groups (`swap_attributes`, `relation`) and half one (`count`);
- your shards (`shards` set): negatives built from each caption by rule
  (`clip_train.data.caption_negatives`); images whose caption offers a kind nothing are not
  counted for it, so a kind may have few or no images.

Each rank scores every world-th scene (or shard) and the counts are summed over ranks.
"""

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from tqdm import tqdm

from clip_train.data.caption_negatives import KINDS, perturb
from clip_train.data.world.scenes import draw_scene
from clip_train.distributed import all_reduce_sum
from clip_train.inference import ClipModel


@dataclass(frozen=True)
class CompositionalTask:
    """The compositional task (`eval.tasks.compositional`): where the images come from and which kinds to score.

    shards: image-text shards whose captions are perturbed by rule; None: the embedded scenes
        `first_scene ... first_scene + scenes - 1` of `scenes_seed` (`configs/eval/task/compositional.yaml`
        points them at the run's `data.synthetic` validation split, by default the 512 scenes after
        the 8192 training ones).
    kinds: the perturbation kinds scored (`clip_train.data.caption_negatives.KINDS`).
    batch_size: images (and their captions) encoded at once; progress: a progress bar on rank 0.
    """

    shards: str | Sequence[str] | None = None
    scenes_seed: int = 0
    first_scene: int = 8192
    scenes: int = 512
    image_size: int = 64
    kinds: Sequence[str] = KINDS
    batch_size: int = 128
    progress: bool = False

    def __post_init__(self):
        bad = sorted(set(self.kinds) - set(KINDS))
        if bad:
            raise ValueError(f"compositional kinds: no kind {bad[0]!r}; there are {', '.join(KINDS)}")
        object.__setattr__(self, "kinds", tuple(self.kinds))  # a list from the config: hashable and picklable

    @torch.no_grad()
    def run(self, model: ClipModel, rank: int, world: int) -> dict[str, float]:
        """{kind: accuracy (chance 0.5)} over all ranks for every kind with at least one image, and `mean`,
        their unweighted mean. Every rank must call this."""
        samples = _shard_samples(self, rank, world) if self.shards else _scene_samples(self, rank, world)
        counts = torch.zeros(2, len(self.kinds), dtype=torch.float64, device=model.device)
        chunk = []
        for sample in tqdm(samples, desc="compositional", unit="image", disable=not (self.progress and rank == 0)):
            chunk.append(sample)
            if len(chunk) == self.batch_size:
                _count(model, chunk, self.kinds, counts)
                chunk = []
        if chunk:
            _count(model, chunk, self.kinds, counts)
        wins, comparisons = all_reduce_sum(counts)
        accuracies = {kind: float(wins[k] / comparisons[k]) for k, kind in enumerate(self.kinds) if comparisons[k] > 0}
        if accuracies:
            accuracies["mean"] = sum(accuracies.values()) / len(accuracies)
        return accuracies


def _scene_samples(spec: CompositionalTask, rank: int, world: int) -> Iterator[tuple]:
    """(PIL image, caption, {kind: negative}) of this rank's scenes, with exact negatives."""
    from clip_train.eval.scene_negatives import scene_negatives

    for index in range(spec.first_scene + rank, spec.first_scene + spec.scenes, world):
        image, scene, caption_stream = draw_scene(spec.scenes_seed, index, spec.image_size)
        caption, negatives = scene_negatives(scene, caption_stream, random.Random(f"compositional/{index}"))
        yield image, caption, negatives


def _shard_samples(spec: CompositionalTask, rank: int, world: int) -> Iterator[tuple]:
    """(preprocessed image, caption, {kind: negative}) of this rank's shards, with negatives by rule."""
    from clip_train.data.shards import expand_shards
    from clip_train.eval.readers import CaptionedImages, pil_rgb

    urls = expand_shards(spec.shards, "compositional shards")[rank::world]
    for pixels, (caption,) in CaptionedImages(urls, pil_rgb, multi_caption=False):
        rng = random.Random(f"compositional/{caption}")  # the same negatives whichever rank reads it
        negatives = {kind: perturb(caption, kind, rng) for kind in KINDS}
        yield pixels, caption, {kind: negative for kind, negative in negatives.items() if negative is not None}


def _count(model: ClipModel, chunk: list[tuple], kinds: Sequence[str], counts: torch.Tensor) -> None:
    """Add this chunk's (wins, comparisons) per kind to `counts` (2, len(kinds))."""
    images = model.encode_image([image for image, _, _ in chunk])
    captions = model.encode_text([caption for _, caption, _ in chunk])
    true_scores = (images * captions).sum(dim=-1)
    for k, kind in enumerate(kinds):
        rows = [i for i, (_, _, negatives) in enumerate(chunk) if kind in negatives]
        if not rows:
            continue
        negatives = model.encode_text([chunk[i][2][kind] for i in rows])
        negative_scores = (images[rows] * negatives).sum(dim=-1)
        wins = (true_scores[rows] > negative_scores).double() + 0.5 * (true_scores[rows] == negative_scores).double()
        counts[0, k] += wins.sum()
        counts[1, k] += len(rows)
