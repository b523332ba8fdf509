"""Conversations as training batches: token ids, answer-only labels and the image's pixels."""

from collections.abc import Callable

import lightning as L
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from clip_train.vlm.conversations import Conversation
from clip_train.vlm.sampler import ResumableSampler
from clip_train.vlm.text import IGNORE, encode_conversation


class ConversationDataset(Dataset):
    """Item i: {"input_ids", "labels"} as lists (`encode_conversation`) and "pixels" (3, H, W) from `preprocess`
    (the CLIP model's evaluation transform), or no pixels for the blind baseline (`with_image=False`)."""

    def __init__(self, conversations: list[Conversation], tokenizer, preprocess: Callable | None, with_image: bool = True):
        self.conversations, self.tokenizer = conversations, tokenizer
        self.preprocess, self.with_image = preprocess, with_image

    def __len__(self) -> int:
        return len(self.conversations)

    def __getitem__(self, index: int) -> dict:
        conversation = self.conversations[index]
        ids, labels = encode_conversation(self.tokenizer, conversation, self.with_image)
        item = {"input_ids": ids, "labels": labels}
        if self.with_image:
            with Image.open(conversation.image) as image:
                item["pixels"] = self.preprocess(image.convert("RGB"))
        return item


class PadConversations:
    """A list of items -> {"input_ids" (B, L) padded with `pad_id` on the right, "attention_mask" (B, L),
    "labels" (B, L) padded with IGNORE, "pixels" (B, 3, H, W) when the items have them}."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, items: list[dict]) -> dict:
        length = max(len(item["input_ids"]) for item in items)
        ids = torch.full((len(items), length), self.pad_id, dtype=torch.long)
        labels = torch.full((len(items), length), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(items), length), dtype=torch.long)
        for row, item in enumerate(items):
            size = len(item["input_ids"])
            ids[row, :size] = torch.tensor(item["input_ids"])
            labels[row, :size] = torch.tensor(item["labels"])
            mask[row, :size] = 1
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        if "pixels" in items[0]:
            batch["pixels"] = torch.stack([item["pixels"] for item in items])
        return batch


class ConversationDataModule(L.LightningDataModule):
    """A stage's loader, built once Lightning knows this rank, the world and (when resuming) the step reached:
    a `ResumableSampler` then continues exactly where the checkpoint stopped."""

    def __init__(self, dataset: ConversationDataset, batch_size: int, num_workers: int, seed: int, pad_id: int):
        super().__init__()
        self.dataset, self.batch_size, self.num_workers, self.seed = dataset, batch_size, num_workers, seed
        self.collate = PadConversations(pad_id)

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        start = trainer.global_step * trainer.accumulate_grad_batches * self.batch_size
        sampler = ResumableSampler(len(self.dataset), self.seed, trainer.global_rank, trainer.world_size, start)
        return DataLoader(self.dataset, self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          collate_fn=self.collate, persistent_workers=self.num_workers > 0)  # fmt: skip
