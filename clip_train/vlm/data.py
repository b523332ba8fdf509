"""A stage's loader: the conversation stream for this rank, its epoch, and its position in every checkpoint.

The loader is built once Lightning knows this rank and the world (`setup`). Its position is kept as the CLIP
trainer keeps its own (`clip_train.data.position`): the epoch and the batches consumed in it go into each
checkpoint (`state_dict`), and a resumed stage's workers skip exactly those (`load_state_dict`).
"""

import logging
import math
import multiprocessing

import lightning as L
from torch.utils.data import DataLoader

from clip_train.data.bad_data import BadDataPolicy
from clip_train.data.position import ResumePoint, StreamLayout, StreamPosition
from clip_train.data.reader_shares import coverage_problem
from clip_train.vlm.conversation_source import ConversationSource
from clip_train.vlm.conversation_stream import ConversationStream, PadConversations

log = logging.getLogger(__name__)


class ConversationDataModule(StreamPosition, L.LightningDataModule):
    """`source`'s conversations in batches of `batch_size` per rank, read by `num_workers` workers, in the order of
    `seed`; `preprocess` (the CLIP model's evaluation transform) makes the pixels, None for the blind baseline."""

    def __init__(
        self,
        source: ConversationSource,
        tokenizer,
        preprocess,
        batch_size: int,
        num_workers: int,
        seed: int,
        shuffle_buffer: int = 1000,
        bad_data: BadDataPolicy | None = None,
    ):
        super().__init__()
        self.source, self.batch_size, self.num_workers, self.seed = source, batch_size, num_workers, seed
        self.collate, self.with_image = PadConversations(tokenizer, preprocess), preprocess is not None
        self.shuffle_buffer, self.bad_data = shuffle_buffer, bad_data or BadDataPolicy()
        self._epoch, self._resume_point = multiprocessing.Value("i", 0), ResumePoint()
        self.rank, self.world = 0, 1

    def setup(self, stage: str) -> None:
        if self.trainer is not None:
            self.rank, self.world = self.trainer.global_rank, self.trainer.world_size
        problem = coverage_problem(self.source.records, self.batches_per_epoch, self.world, self.batch_size)
        if problem is not None and self.rank == 0:
            log.warning("%s: %s", self.source.option, problem)

    @property
    def batches_per_epoch(self) -> int:
        """Batches each rank yields per epoch: the same on every rank, enough for every record."""
        return math.ceil(self.source.records / (self.batch_size * self.world))

    @property
    def stream_name(self) -> str:
        return self.source.option

    @property
    def layout(self) -> StreamLayout:
        return StreamLayout(
            self.world, max(1, self.num_workers), self.batch_size, self.batches_per_epoch, False, self.seed,
            len(self.source.units), self.source.records,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        stream = ConversationStream(
            self.source.units, self.source.sizes, rank=self.rank, world=self.world, batch_size=self.batch_size,
            batches_per_rank=self.batches_per_epoch, seed=self.seed, shuffle_buffer=self.shuffle_buffer,
            epoch=self._epoch, resume_point=self._resume_point, collate=self.collate, with_image=self.with_image,
            bad_data=self.bad_data,
        )  # fmt: skip
        return DataLoader(stream, batch_size=None, num_workers=self.num_workers, persistent_workers=self.num_workers > 0)
