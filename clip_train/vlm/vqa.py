"""Scoring a VLM on held-out questions: VQA accuracy per question type, and grounding accuracy at IoU 0.5.

Each rank answers its share of the questions (every world-th one) and the per-type sums are added over
ranks, so every rank returns the same metrics (a task never runs on rank 0 alone: NCCL would hang).
`vqa/mean` is the mean over question types, so a frequent type does not outweigh a rare one.
"""

import io
import re
from collections.abc import Callable

import torch
from PIL import Image

from clip_train.distributed import all_reduce_sum, rank_and_world
from clip_train.vlm.answers import vqa_accuracy
from clip_train.vlm.conversations import Conversation
from clip_train.vlm.model import VisionLanguageModel
from clip_train.vlm.questions import LOCATION_BINS
from clip_train.vlm.text import prompt_ids

LOCATION = re.compile(r"<loc_(\d+)>")


def box_from_tokens(text: str) -> tuple[float, ...] | None:
    """The first four location tokens of `text` as a box in fractions of the side; None when there are fewer."""
    values = [int(v) for v in LOCATION.findall(text)][:4]
    return tuple(v / LOCATION_BINS for v in values) if len(values) == 4 else None


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def score(kind: str | None, prediction: str, answer: str) -> float:
    """1/0 for a grounding answer (IoU >= 0.5 with the reference box), VQAv2 accuracy for any other."""
    if kind == "grounding":
        predicted, reference = box_from_tokens(prediction), box_from_tokens(answer)
        return float(predicted is not None and reference is not None and iou(predicted, reference) >= 0.5)
    return vqa_accuracy(prediction, [answer])


def _as_image(image) -> Image.Image:
    """A PIL image from a path, encoded bytes (a `Conversation`'s) or a PIL image."""
    if isinstance(image, bytes):
        return Image.open(io.BytesIO(image))
    return Image.open(image) if isinstance(image, str) else image


@torch.no_grad()
def answer(
    model: VisionLanguageModel,
    tokenizer,
    questions: list[tuple[str, str]],
    preprocess: Callable | None,
    max_new_tokens: int = 6,
) -> list[str]:
    """Greedy answers to [(image path, encoded bytes or PIL image, question)], one batch, prompts left-padded."""
    prompts = [prompt_ids(tokenizer, question, with_image=not model.blind) for _, question in questions]
    length = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), length), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, length - len(prompt) :], mask[row, length - len(prompt) :] = torch.tensor(prompt), 1
    pixels = None
    if not model.blind:
        images = [_as_image(image) for image, _ in questions]
        pixels = torch.stack([preprocess(image.convert("RGB")) for image in images])
    device = next(model.parameters()).device
    new = model.generate(ids.to(device), mask.to(device), None if pixels is None else pixels.to(device),
                         tokenizer.eos_token_id, max_new_tokens)  # fmt: skip
    return [tokenizer.decode(row, skip_special_tokens=False).strip() for row in new]


def evaluate_questions(
    model: VisionLanguageModel,
    tokenizer,
    conversations: list[Conversation],
    preprocess: Callable | None,
    batch_size: int = 64,
    prefix: str = "",
) -> dict[str, float]:
    """{prefix + "vqa/<type>", prefix + "vqa/mean", prefix + "grounding/acc@0.5" if asked} over the first turn of
    every conversation (its question type from `question_types`), on this rank's share, summed over ranks."""
    rank, world = rank_and_world()
    turns = [(c.image, c.turns[0]) for c in conversations]
    kinds = sorted({turn.kind or "other" for _, turn in turns})
    totals = torch.zeros(len(kinds), 2, dtype=torch.float64)  # (score sum, count) per type
    model.eval()
    mine = turns[rank::world]
    for start in range(0, len(mine), batch_size):
        chunk = mine[start : start + batch_size]
        predictions = answer(model, tokenizer, [(image, turn.question) for image, turn in chunk], preprocess)
        for (_, turn), prediction in zip(chunk, predictions):
            row = kinds.index(turn.kind or "other")
            totals[row] += torch.tensor([score(turn.kind, prediction, turn.answer), 1.0], dtype=torch.float64)
    totals = all_reduce_sum(totals) if world > 1 else totals
    metrics, vqa = {}, []
    for kind, (total, count) in zip(kinds, totals.tolist()):
        if kind == "grounding":
            metrics[f"{prefix}grounding/acc@0.5"] = total / count
        else:
            metrics[f"{prefix}vqa/{kind}"] = total / count
            vqa.append(total / count)
    if vqa:
        metrics[f"{prefix}vqa/mean"] = sum(vqa) / len(vqa)
    return metrics
