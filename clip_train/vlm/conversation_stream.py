"""A stage's batches of conversations, read exactly once per epoch over ranks × workers and resumed exactly.

The order and the split are the CLIP trainer's (`clip_train.data.reader_shares`, `clip_train.data.position`):
each epoch lays the units (`data.rows_per_unit` records of a file, or a tar shard) out in a seeded order, the
same on every rank, numbers their records, and reader (rank, worker) reads its own contiguous range of
`batches × batch_size` positions, shuffled within the range by a seeded buffer of `data.shuffle_buffer`. A rank
yields exactly `batches_per_rank` batches per epoch, dealt round-robin over its workers, so with as many
records as a multiple of the global batch every record is read once per epoch, and a resumed stage's workers
skip the batches the checkpoint consumed (`ResumePoint`). A reader whose range runs short (bad records skipped)
reads on into the range-sized chunks after it, as the trainer's readers do.

What does not carry over from the image-caption stream, and why:
- the shuffle is by units then a buffer, not one permutation of every record as LLaVA's sampler draws: a tar
  can only be read in order, and a JSON list cut into small units (`rows_per_unit`, 100 by default) comes close;
- there is no resampled stream and no weighted mixing: a stage reads one source, whose size must be known
  (local files), since its length is set in steps;
- every record is checked in full where it is read (its conversation parsed, its image decoded once), not at
  batching as the trainer defers it: a bad image then never shifts a resumed stream, at the cost of decoding a
  resumed worker's skipped records. The buffer holds encoded images; pixels are made only for yielded batches.

Batch: {"input_ids" (B, L), "attention_mask" (B, L), "labels" (B, L), "pixels" (B, 3, H, W) unless blind,
"key": B record keys, "bad_samples": (K,) long, the items skipped since the previous batch per kind
(`clip_train.data.bad_data.BAD_KINDS`)}.
"""

import io
import itertools
import math
import random
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.sharedctypes import Synchronized

import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from clip_train.data.bad_data import BadDataPolicy, BadSampleCounter
from clip_train.data.pipeline import shuffled, slice_samples
from clip_train.data.position import ResumePoint, skip
from clip_train.data.reader_shares import ReaderShare, shard_order, slices, worker_batches
from clip_train.vlm.conversation_source import sample_conversation
from clip_train.vlm.conversations import Conversation
from clip_train.vlm.text import IGNORE, encode_conversation


class PadConversations:
    """Conversations -> {"input_ids" (B, L) padded with `pad_id` on the right, "attention_mask" (B, L), "labels"
    (B, L) padded with IGNORE (answer tokens only: `encode_conversation`), "pixels" (B, 3, H, W) from `preprocess`
    (the CLIP model's evaluation transform) unless it is None (the blind baseline), "key"}."""

    def __init__(self, tokenizer, preprocess: Callable | None):
        self.tokenizer, self.preprocess = tokenizer, preprocess

    def __call__(self, conversations: list[Conversation]) -> dict:
        encoded = [encode_conversation(self.tokenizer, c, self.preprocess is not None) for c in conversations]
        length = max(len(ids) for ids, _ in encoded)
        ids = torch.full((len(encoded), length), self.tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(encoded), length), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(encoded), length), dtype=torch.long)
        for row, (row_ids, row_labels) in enumerate(encoded):
            ids[row, : len(row_ids)], labels[row, : len(row_ids)] = torch.tensor(row_ids), torch.tensor(row_labels)
            mask[row, : len(row_ids)] = 1
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels, "key": [c.key for c in conversations]}
        if self.preprocess is not None:
            images = [Image.open(io.BytesIO(c.image)).convert("RGB") for c in conversations]
            batch["pixels"] = torch.stack([self.preprocess(image) for image in images])
        return batch


class ConversationStream(IterableDataset):
    """Training batches of conversations for rank `rank` of `world` (see the module docstring).

    units, sizes: the source's units and the records in each (`ConversationSource`).
    batches_per_rank: batches this rank yields per epoch (worker w of W: `len(range(w, batches_per_rank, W))`).
    epoch, resume_point: shared with persistent workers; the data module sets them.
    collate: conversations -> batch (`PadConversations`); with_image: False for the blind baseline, whose
        images are neither checked nor counted.
    """

    def __init__(
        self,
        units: Sequence[str],
        sizes: Sequence[int],
        *,
        rank: int,
        world: int,
        batch_size: int,
        batches_per_rank: int,
        seed: int,
        shuffle_buffer: int,
        epoch: Synchronized,
        resume_point: ResumePoint,
        collate: PadConversations,
        with_image: bool = True,
        bad_data: BadDataPolicy | None = None,
    ):
        super().__init__()
        self.units, self.sizes, self.rank, self.world = list(units), list(sizes), rank, world
        self.batch_size, self.batches_per_rank, self.seed, self.shuffle_buffer = (
            batch_size,
            batches_per_rank,
            seed,
            shuffle_buffer,
        )
        self.epoch, self.resume_point, self.collate, self.with_image = epoch, resume_point, collate, with_image
        self.bad_data = bad_data or BadDataPolicy()

    def _conversations(self, worker: int, workers: int, epoch: int, counter: BadSampleCounter) -> Iterator[Conversation]:
        """This reader's range of the epoch's records, then the range-sized chunks after it, each shuffled alone."""
        order = shard_order(len(self.units), self.seed, epoch)
        units, sizes = [self.units[i] for i in order], [self.sizes[i] for i in order]
        share = ReaderShare.of(self.rank, worker, workers, self.batches_per_rank, self.batch_size)
        rng = random.Random(f"{self.seed}/conversations/{epoch}/{self.rank}/{worker}")
        dry, dry_limit = 0, math.ceil(sum(sizes) / max(share.length, 1))  # that many chunks cover every record
        for start, length in share.chunks():
            decoded_before = counter.decoded
            pieces = slices(units, sizes, start, length)
            samples = (sample for piece in pieces for sample in slice_samples(piece, counter))
            good = (c for sample in samples if (c := sample_conversation(sample, counter, self.with_image)) is not None)
            yield from shuffled(good, rng, self.shuffle_buffer)
            dry = dry + 1 if counter.decoded == decoded_before else 0
            if dry >= dry_limit:
                raise RuntimeError(f"no readable conversation in any of these units: {self.units[:5]} ...")

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        slot, workers = (info.id, info.num_workers) if info else (0, 1)
        epoch = self.epoch.value
        worker, skipped = self.resume_point.plan(epoch, slot, workers)
        counter = BadSampleCounter(self.bad_data)
        conversations = self._conversations(worker, workers, epoch, counter)
        groups = iter(lambda: list(itertools.islice(conversations, self.batch_size)), [])
        groups = itertools.islice(groups, worker_batches(self.batches_per_rank, worker, workers))
        skip(groups, skipped, counter.take)
        for group in groups:
            yield self.collate(group) | {"bad_samples": counter.take()}
