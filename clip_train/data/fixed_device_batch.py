"""Training data without a loader, for measuring the step alone: one random batch made on the device, fed at every step.

`scripts/benchmark.py --synthetic-data` trains with this data module in place of the loader
(`data._target_=clip_train.data.fixed_device_batch.FixedDeviceBatches`), so its samples/s is the
speed of the training step: no decoding, no worker processes, no host-to-device copy. The batch
is what the loader's batches are: (B, 3, H, W) uint8 images, (B, L) token ids with a full
attention mask, and no bad samples; it is made once, on the device, at the first transfer, and
normalised there like every loaded batch (the data module's `on_after_batch_transfer`), so the
step runs the same code as with real data. Everything else (tokenizer, normalisation
constants, schedule length) is the configured data module's; there is no validation data.
"""

import itertools

import torch
from torch.utils.data import DataLoader, IterableDataset

from clip_train.data import ShardDataModule
from clip_train.data.bad_data import BAD_KINDS


class _Placeholders(IterableDataset):
    """An endless stream of None: the loader only paces the steps; the batch itself is made on the device."""

    def __iter__(self):
        return itertools.repeat(None)


def random_device_batch(batch_size: int, image_size: int, context_length: int, vocab_size: int, device) -> dict:
    """image (B, 3, S, S) uint8, input_ids (B, L) in [1, vocab_size), attention_mask (B, L) ones, bad_samples zeros."""
    return {
        "image": torch.randint(0, 256, (batch_size, 3, image_size, image_size), dtype=torch.uint8, device=device),
        "input_ids": torch.randint(1, vocab_size, (batch_size, context_length), device=device),
        "attention_mask": torch.ones(batch_size, context_length, dtype=torch.long, device=device),
        "bad_samples": torch.zeros(len(BAD_KINDS), dtype=torch.long, device=device),
    }


class FixedDeviceBatches(ShardDataModule):
    """The configured `ShardDataModule` whose training loader yields one device-resident random batch, again and again."""

    def __init__(self, **data_module_options):
        super().__init__(**data_module_options)
        self.image_size = data_module_options["image_size"]
        self._batch: dict | None = None

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Placeholders(), batch_size=None)

    def val_dataloader(self) -> list:
        return []

    def transfer_batch_to_device(self, batch: None, device: torch.device, dataloader_idx: int) -> dict:
        if self._batch is None:
            self._batch = random_device_batch(
                self.batch_size, self.image_size, self.context_length, len(self.tokenizer), device
            )
        return self._batch
