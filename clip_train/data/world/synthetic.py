"""The embedded default dataset: drawn scenes written once into a cache folder as real shards.

The shards then stream through exactly the same WebDataset path as user data, so the default
run exercises the whole pipeline. The folder name holds every generation parameter, so a new
setting never reuses a stale cache; writing goes to a temporary folder renamed into place, so
concurrent ranks or an interrupted run never leave a half-written set behind.
"""

import logging
import os
import random
from dataclasses import asdict, dataclass

from clip_train.cache_folder import write_folder_once
from clip_train.data.shard_writer import Sample, write_shards
from clip_train.data.world.scenes import draw_shape_twin, make_pair

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1


def _is_shape_twin(seed: int, index: int, share: float) -> bool:
    """Whether sample `index` (odd) is the shape twin of sample `index - 1`: drawn per couple, so about
    `share` of the samples come in such couples."""
    return index % 2 == 1 and random.Random(f"{seed}/{index - 1}/couple").random() < share


def _samples(seed: int, start: int, count: int, image_size: int, shape_twin_share: float = 0.0):
    for index in range(start, start + count):
        if _is_shape_twin(seed, index, shape_twin_share):
            image, caption, scene = draw_shape_twin(seed, index - 1, image_size)
        else:
            image, caption, scene = make_pair(seed, index, image_size)
        yield Sample(key=f"{index:09d}", image=image, caption=caption, metadata={"scene": asdict(scene)})


def _brace_pattern(folder: str, prefix: str, num_shards: int) -> str:
    return os.path.join(folder, f"{prefix}-{{00000..{num_shards - 1:05d}}}.tar")


@dataclass(frozen=True)
class SyntheticShards:
    """The embedded scene dataset: `num_train` + `num_val` pairs at `image_size` px, seeded by `seed`.

    shape_twin_share: about this share of the training pairs come as couples written next to each other,
        a scene and its shape twin (`clip_train.data.world.scenes.draw_shape_twin`: the same picture and words
        but one shape). With `data.neighbour_share` they tend to meet in a batch, where only shape tells
        them apart. Validation pairs never do, so retrieval figures stay comparable.
    """

    num_train: int = 8192
    num_val: int = 512
    samples_per_shard: int = 1024
    image_size: int = 64
    seed: int = 0
    shape_twin_share: float = 0.0

    def write(self, cache_dir: str) -> tuple[str, str]:
        """Write the set under `cache_dir` unless it is cached already; returns the (train, val) brace patterns.

        Validation scenes use indices after the training ones, so the splits never share a pair.
        """
        name = (
            f"scenes-v{GENERATOR_VERSION}-seed{self.seed}-train{self.num_train}-val{self.num_val}"
            f"-px{self.image_size}-per{self.samples_per_shard}-twins{self.shape_twin_share:g}"
        )
        folder = os.path.join(cache_dir, name)
        splits = {"train": (0, self.num_train), "val": (self.num_train, self.num_val)}
        patterns = tuple(
            _brace_pattern(folder, split, -(-count // self.samples_per_shard)) for split, (_, count) in splits.items()
        )
        if os.path.isdir(folder):
            return patterns

        def write_splits(staging: str) -> None:
            log.info("Writing the synthetic dataset (%d train, %d val pairs) to %s", self.num_train, self.num_val, folder)
            for split, (start, count) in splits.items():
                twins = self.shape_twin_share if split == "train" else 0.0
                samples = _samples(self.seed, start, count, self.image_size, twins)
                write_shards(staging, split, samples, self.samples_per_shard)

        write_folder_once(folder, write_splits)
        return patterns
