"""Score every pair of a set of units with a model: CLIP score and image embedding, written per unit and resumable.

A unit (a tar shard, or a row range of a table, folder or Hugging Face dataset: `clip_train.data.source_kinds`)
is scored whole and its results are written to `scores/<sha1 of the unit>.pt` in one atomic rename, so a killed
run leaves only whole files and a rerun scores only the units without one. Each file holds

    unit              the unit's URL
    scorer            what scored it (the checkpoint path): a rerun with another model refuses the file
    keys, captions    the N decoded pairs' keys and captions, in reading order
    scores            (N,) float32: cosine of the unit-norm image and caption embeddings, DataComp's CLIP score
    image_embeddings  (N, D) float32, unit norm: what deduplication compares
    bad               (K,) long: skipped items by kind, in `clip_train.data.bad_data.BAD_KINDS` order
"""

import hashlib
import os

import torch

from clip_train.data.bad_data import BadDataPolicy, BadSampleCounter
from clip_train.data.pipeline import decode_pair
from clip_train.data.source_kinds import unit_samples
from clip_train.inference import ClipModel

SCORES_FOLDER = "scores"


def unit_file(folder: str, unit: str) -> str:
    """The score file of `unit` under `folder`/scores."""
    return os.path.join(folder, SCORES_FOLDER, hashlib.sha1(unit.encode()).hexdigest() + ".pt")


@torch.no_grad()
def _score_batch(model: ClipModel, pixels: list[torch.Tensor], captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    images = model.encode_pixels(torch.stack(pixels))  # unit norm, (B, D)
    texts = model.encode_text(captions)
    return (images * texts).sum(dim=-1).cpu(), images.cpu()


def score_unit(model: ClipModel, unit: str, scorer: str, batch_size: int) -> dict:
    """The score record of one unit (see the module docstring). Bad samples are skipped and counted, never fatal."""
    counter = BadSampleCounter(BadDataPolicy(max_rate=1.0))  # curation reports bad data; it does not stop for it
    keys, captions, scores, embeddings, batch = [], [], [], [], []

    def flush() -> None:
        pixels, texts, names = zip(*batch)
        batch_scores, batch_embeddings = _score_batch(model, list(pixels), list(texts))
        keys.extend(names)
        captions.extend(texts)
        scores.append(batch_scores)
        embeddings.append(batch_embeddings)
        batch.clear()

    for sample in unit_samples(iter([{"url": unit}]), counter):
        pair = decode_pair(sample, counter, model.preprocess_encoded)
        if pair is not None:
            batch.append(pair)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    empty = torch.zeros(0, model.embed_dim)
    return {
        "unit": unit,
        "scorer": scorer,
        "keys": keys,
        "captions": captions,
        "scores": torch.cat(scores) if scores else torch.zeros(0),
        "image_embeddings": torch.cat(embeddings) if embeddings else empty,
        "bad": torch.tensor(counter.counts, dtype=torch.long),
    }


def read_unit_scores(folder: str, unit: str, scorer: str) -> dict | None:
    """The stored record of `unit`, or None when it has not been scored; ValueError when another model scored it."""
    path = unit_file(folder, unit)
    if not os.path.exists(path):
        return None
    record = torch.load(path, weights_only=True)
    if record["unit"] != unit or record["scorer"] != scorer:
        raise ValueError(
            f"{path} holds scores of {record['unit']} by {record['scorer']}, not of {unit} by {scorer}: "
            f"delete {os.path.join(folder, SCORES_FOLDER)} to score again with this model"
        )
    return record


def score_units(model: ClipModel, units: list[str], folder: str, scorer: str, batch_size: int) -> int:
    """Score each of `units` that has no score file under `folder` yet; returns how many were scored now."""
    os.makedirs(os.path.join(folder, SCORES_FOLDER), exist_ok=True)
    scored = 0
    for unit in units:
        if read_unit_scores(folder, unit, scorer) is not None:
            continue
        path = unit_file(folder, unit)
        torch.save(score_unit(model, unit, scorer, batch_size), path + ".partial")
        os.replace(path + ".partial", path)
        scored += 1
    return scored
