"""Tiny image-text samples that tests write into shards."""

import random

from PIL import Image

from clip_train.data.shard_writer import Sample

COLORS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 230, 30)}


def colour_samples(count: int, start: int = 0, size: int = 32) -> list[Sample]:
    """Plain-colour squares captioned with their colour; keys are the sample indices."""
    names = list(COLORS)
    rng = random.Random(start)
    samples = []
    for index in range(start, start + count):
        name = names[rng.randrange(len(names))]
        image = Image.new("RGB", (size, size), COLORS[name])
        samples.append(Sample(key=f"{index:09d}", image=image, caption=f"a {name} square", metadata={"i": index}))
    return samples
