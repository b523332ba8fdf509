"""LLaVA's conversation records: checking one, and writing the embedded world's captions and Q/A as LLaVA JSON.

A file is a list of records, as LLaVA's training sets are:

    {"id": "000000012", "image": "images/000000012.png",
     "conversations": [{"from": "human", "value": "<image>\\nhow many squares are there?"},
                       {"from": "gpt", "value": "2"}, {"from": "human", "value": "..."}, ...],
     "question_types": ["count", ...]}

Turns alternate human/gpt from a human one; the first human turn holds the `<image>` placeholder once and
no other turn does. `image` is relative to the JSON file's folder (or `data.image_folder`). `question_types` (ours,
optional) names each gpt turn's question type, for accuracy per type. Files, JSONL, tables and shards of such
records are read by `clip_train.vlm.conversation_source`.
"""

import json
import logging
import os
import random
from dataclasses import dataclass

from clip_train.cache_folder import write_folder_once
from clip_train.data.world.scenes import describe_scene, draw_scene
from clip_train.vlm.questions import scene_questions

log = logging.getLogger(__name__)

IMAGE = "<image>"
DESCRIBE = "describe the image."
VERSION = 3  # in the cache folder name: a change to the questions writes a new set


@dataclass(frozen=True)
class Turn:
    question: str
    answer: str
    kind: str | None


@dataclass(frozen=True)
class Conversation:
    """One record: its image (encoded bytes, or a path), its human/gpt turns (the first question held `<image>`)
    and its key (the record's `id`, else its row; for logs and tests)."""

    image: bytes | str
    turns: tuple[Turn, ...]
    key: str = ""


def record_turns(record) -> tuple[Turn, ...]:
    """The turns of one LLaVA record (a dict with `conversations` and optionally `question_types`), checked;
    ValueError saying what is wrong with it (the reader names the record)."""
    if not isinstance(record, dict):
        raise ValueError(f"a record is a JSON object, not {type(record).__name__}")
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns or len(turns) % 2:
        raise ValueError("'conversations' must be a non-empty list of human/gpt pairs")
    speakers = [turn.get("from") if isinstance(turn, dict) else None for turn in turns]
    if speakers != ["human", "gpt"] * (len(turns) // 2):
        raise ValueError(f"'conversations' speakers are {speakers}, not alternating human, gpt")
    values = [turn.get("value") for turn in turns]
    if not all(isinstance(value, str) for value in values):
        raise ValueError("every turn needs a string 'value'")
    if values[0].count(IMAGE) != 1 or any(IMAGE in value for value in values[1:]):
        raise ValueError(f"the first human turn must hold {IMAGE} once, and no other turn")
    kinds = record.get("question_types") or [None] * (len(turns) // 2)
    if len(kinds) != len(turns) // 2:
        raise ValueError(f"'question_types' has {len(kinds)} entries for {len(turns) // 2} questions")
    questions = [values[0].replace(IMAGE, "").strip(), *values[2::2]]
    return tuple(Turn(q, a, k) for q, a, k in zip(questions, values[1::2], kinds))


def _record(key: str, turns: list[Turn]) -> dict:
    values = []
    for number, turn in enumerate(turns):
        question = f"{IMAGE}\n{turn.question}" if number == 0 else turn.question
        values += [{"from": "human", "value": question}, {"from": "gpt", "value": turn.answer}]
    record = {"id": key, "image": f"images/{key}.png", "conversations": values}
    if any(turn.kind for turn in turns):
        record["question_types"] = [turn.kind for turn in turns]
    return record


@dataclass(frozen=True)
class SceneQuestionSet:
    """The embedded world's Q/A in LLaVA's format: `num_train` training scenes, `num_test` held-out ones.

    Scenes come from the scene stream of `seed` (the CLIP default trains on seed 0, so seed 1 gives scenes it never
    saw). Test scenes follow the training indices and skip any scene equal to a training one (the same groups and
    background, only the drawing's jitter apart): the questions are held out by scene. Files written:
    captions.json (one "describe the image." turn per training scene, for the align stage), train.json and
    test.json (one record per question, one question of each type per scene). A record holds one question: in
    a conversation of several, an earlier question ("where is the pink triangle?") would answer a later one
    ("what color is the triangle?") without the image.
    """

    num_train: int = 2000
    num_test: int = 300
    image_size: int = 64
    seed: int = 1
    kinds: tuple[str, ...] = ("color", "count", "shape", "position", "yesno")

    def folder_name(self) -> str:
        return (
            f"vlm-scenes-v{VERSION}-seed{self.seed}-train{self.num_train}-test{self.num_test}-px{self.image_size}"
            f"-{'-'.join(self.kinds)}"
        )

    def write(self, cache_dir: str) -> str:
        """Write the set under `cache_dir` unless it is there already; returns its folder."""
        folder = os.path.join(cache_dir, self.folder_name())
        if not os.path.isdir(folder):
            log.info("Writing the embedded Q/A (%d train, %d test scenes) to %s", self.num_train, self.num_test, folder)
        return write_folder_once(folder, self._write_into)

    def _write_into(self, folder: str) -> None:
        os.makedirs(os.path.join(folder, "images"))
        captions, train, test, seen, test_scenes = [], [], [], set(), 0
        index = 0
        while index < self.num_train or test_scenes < self.num_test:
            image, scene, rng = draw_scene(self.seed, index, self.image_size)
            training = index < self.num_train
            if not training and scene in seen:
                index += 1
                continue
            key = f"{index:09d}"
            image.save(os.path.join(folder, "images", f"{key}.png"))
            questions = scene_questions(scene, image, self.kinds, random.Random(f"{self.seed}/{index}/questions"))
            if training:
                seen.add(scene)
                captions.append(_record(key, [Turn(DESCRIBE, describe_scene(scene, rng), None)]))
            records = [_record(key, [Turn(q.question, q.answer, q.kind)]) for q in questions]
            if training:
                train += records
            else:
                test += records
                test_scenes += 1
            index += 1
        for name, records in (("captions", captions), ("train", train), ("test", test)):
            with open(os.path.join(folder, f"{name}.json"), "w") as f:
                json.dump(records, f)
