"""A tiny vision-language model for the VLM tests: timm's test_vit tower (32 px) -> MLP or Q-Former -> a 2-layer,
32-wide Llama."""

import json
import os

import lightning as L
import torch
from PIL import Image
from transformers import LlamaConfig, LlamaForCausalLM

from clip_train.model import ImageTower
from clip_train.vlm.connector import MlpConnector
from clip_train.vlm.conversation_source import ConversationSource, read_conversations
from clip_train.vlm.conversations import Conversation
from clip_train.vlm.model import VisionLanguageModel
from clip_train.vlm.qformer import QFormerConnector
from clip_train.vlm.text import build_word_tokenizer
from clip_train.vlm.vision import ImageFeatures

WORDS = ["what color is the square?", "red", "green", "blue", "how many circles are there?", "2", "describe the image."]


def tiny_lm(tokenizer, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def tiny_vlm(
    texts=WORDS, blind: bool = False, seed: int = 0, connector: str = "mlp2x", **vision_options
) -> tuple[VisionLanguageModel, object]:
    """(model, word tokenizer of `texts`), seeded: the blind model's LM starts from the same weights. `connector`:
    mlp2x (LLaVA's MLP) or qformer (4 queries, 1 layer of width 16)."""
    tokenizer = build_word_tokenizer(texts)
    language_model = tiny_lm(tokenizer, seed)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    if blind:
        return VisionLanguageModel(language_model, image_id, None, None), tokenizer
    torch.manual_seed(seed + 1)
    vision = ImageFeatures(ImageTower("test_vit", embed_dim=16, image_size=32), **vision_options)
    connectors = {
        "mlp2x": lambda: MlpConnector(vision.width, 32),
        "qformer": lambda: QFormerConnector(vision.width, 32, num_queries=4, num_layers=1, width=16, num_heads=2),
    }
    return VisionLanguageModel(language_model, image_id, vision, connectors[connector]()), tokenizer


class StopAfter(L.Callback):
    """Stops a stage after optimizer step `steps`, as a killed run would stop: its last checkpoint is then resumed."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_index) -> None:
        if trainer.global_step == self.steps:
            trainer.should_stop = True


def read_test_set(path: str) -> list[Conversation]:
    """The conversations of a stage's test file (its recipe's `test_questions`), read as the run reads them."""
    conversations, skipped = read_conversations(ConversationSource.of(path, "data.test"))
    assert not skipped, skipped
    return conversations


SQUARE_COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


def square_records(folder: str, count: int) -> list[dict]:
    """`count` LLaVA records of 32-px squares of three colours in turn (the PNGs written into `folder`), each asked
    its colour; every answer is one word, so every record has as many answer tokens."""
    records = []
    for index in range(count):
        colour = list(SQUARE_COLOURS)[index % 3]
        Image.new("RGB", (32, 32), SQUARE_COLOURS[colour]).save(os.path.join(folder, f"{index}.png"))
        turns = [{"from": "human", "value": "<image>\nwhat color is the square?"}, {"from": "gpt", "value": colour}]
        records.append({"id": str(index), "image": f"{index}.png", "conversations": turns})
    return records


def write_records(path: str, records: list[dict]) -> str:
    """`records` as LLaVA's JSON list at `path`; returns `path`."""
    with open(path, "w") as f:
        json.dump(records, f)
    return path
