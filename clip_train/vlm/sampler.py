"""Which conversations each rank reads at each step: a seeded stream that a resumed stage continues exactly.

Lightning restarts a map-style loader at the top of its epoch on resume, so a stage stopped mid-epoch would read
its first batches twice and its last never. Here the global order is a permutation of the set per epoch, seeded
by (seed, epoch), epochs one after another without end; rank r of `world` reads every world-th position of it, and
a stage resumed after `start` of this rank's samples skips exactly those. Ranks read equally many samples, so no
rank waits for another at the end (a DDP hang).
"""

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """Indices into a set of `length` for rank `rank` of `world`, endless, from this rank's sample `start` on."""

    def __init__(self, length: int, seed: int, rank: int = 0, world: int = 1, start: int = 0):
        if length < world:
            raise ValueError(f"{length} conversations cannot be shared by {world} ranks")
        self.length, self.seed, self.rank, self.world, self.start = length, seed, rank, world, start

    def __iter__(self) -> Iterator[int]:
        per_epoch = self.length // self.world  # this rank's samples per epoch; the remainder is left out of each epoch
        epoch, skip = divmod(self.start, per_epoch)
        while True:
            order = torch.randperm(self.length, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
            yield from order[self.rank : per_epoch * self.world : self.world][skip:].tolist()
            epoch, skip = epoch + 1, 0
