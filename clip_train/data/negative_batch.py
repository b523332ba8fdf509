"""Text hard negatives for a batch, made in the data workers: k false captions per caption, tokenized.

Each caption gets up to k different negatives by the rules of `clip_train.data.caption_negatives`
(drawn from a random stream seeded per batch, so a resumed run draws the same ones). A caption
that offers fewer than k keeps empty slots, marked invalid, so every batch has the same shape.
"""

import random
from collections.abc import Callable, Sequence

import torch

from clip_train.data.caption_negatives import KINDS, hard_negatives


class NegativeCaptions:
    """captions, seed -> {negative_input_ids (B, k, L), negative_attention_mask (B, k, L), negative_valid (B, k) bool}.

    k: negatives per caption; kinds: the rules they are drawn from;
    tokenize: the batch tokenizer ({input_ids, attention_mask}, each (N, L)).
    """

    def __init__(self, k: int, tokenize: Callable[[list[str]], dict[str, torch.Tensor]], kinds: Sequence[str] = KINDS):
        unknown = sorted(set(kinds) - set(KINDS))
        if k < 1 or unknown or not kinds:
            raise ValueError(f"text hard negatives need k >= 1 (got {k}) and kinds among {', '.join(KINDS)} (got {kinds})")
        self.k, self.tokenize, self.kinds = k, tokenize, tuple(kinds)

    def __call__(self, captions: Sequence[str], seed: int) -> dict[str, torch.Tensor]:
        rng = random.Random(seed)
        drawn = [hard_negatives(caption, self.k, rng, self.kinds) for caption in captions]
        valid = torch.tensor([[slot < len(negatives) for slot in range(self.k)] for negatives in drawn])
        flat = [negatives[slot] if slot < len(negatives) else "" for negatives in drawn for slot in range(self.k)]
        tokens = self.tokenize(flat)
        shape = (len(captions), self.k, -1)
        return {
            "negative_input_ids": tokens["input_ids"].view(shape),
            "negative_attention_mask": tokens["attention_mask"].view(shape),
            "negative_valid": valid,
        }
