"""The embedded Q/A: answers checked against the drawn pixels and the scene, LLaVA's format, held out by scene."""

import json
import random

import numpy as np
import pytest
from scipy import ndimage

from clip_train.data.world.scenes import COLORS, REGIONS, SHAPES, draw_scene
from clip_train.vlm.conversation_source import ConversationSource, read_conversations
from clip_train.vlm.conversations import IMAGE, SceneQuestionSet, record_turns
from clip_train.vlm.questions import QUESTION_TYPES, scene_questions

SIZE = 96


def _blobs(pixels: np.ndarray, color: str) -> int:
    """Connected areas drawn in exactly `color`'s RGB."""
    return ndimage.label((pixels == np.array(COLORS[color])).all(axis=-1))[1]


@pytest.mark.parametrize("index", range(40))
def test_answers_match_the_drawn_image(index):
    image, scene, _ = draw_scene(7, index, SIZE)
    pixels = np.asarray(image)
    questions = {q.kind: q for q in scene_questions(scene, image, QUESTION_TYPES, random.Random(index))}
    shape = questions["shape"]
    color_word = shape.question.split("the ")[1].split()[0]
    assert _blobs(pixels, color_word) > 0 and shape.answer in {g.shape for g in scene.groups if g.color == color_word}
    if "color" in questions:  # the named shape is drawn in the answered colour, which no other group has
        color = questions["color"]
        owner = next(g for g in scene.groups if g.color == color.answer)
        assert _blobs(pixels, color.answer) > 0 and color.question.removesuffix("?").split()[-1].startswith(owner.shape)
        assert [g.shape for g in scene.groups].count(owner.shape) == 1
    count = questions["count"]
    word = count.question.split()[2]  # a colour or a shape
    named = [g for g in scene.groups if word in (g.color, g.shape + "s", g.shape + "es")]
    assert int(count.answer) == sum(g.count for g in named)
    assert word in COLORS or word.startswith(tuple(SHAPES))
    # each object named is drawn: as many areas of its colours, fewer only where jittered objects touch
    assert sum(min(1, _blobs(pixels, g.color)) for g in named) == len(named)
    assert sum(_blobs(pixels, g.color) for g in named) <= int(count.answer)
    yesno = questions["yesno"]
    color, kind = yesno.question.removeprefix("is there a ").removesuffix("?").split()
    drawn = any(g.color == color and g.shape == kind for g in scene.groups) and _blobs(pixels, color) > 0
    assert yesno.answer == ("yes" if drawn else "no")
    box = [int(v) / 1000 for v in questions["grounding"].answer.replace("<loc_", " ").replace(">", " ").split()]
    grounded = next(g for g in scene.groups if f" {g.color} " in questions["grounding"].question)
    cx, cy = REGIONS[grounded.region]
    assert box[0] < cx < box[2] and box[1] < cy < box[3]  # the box holds its region's centre
    inside = pixels[int(box[1] * SIZE) : int(box[3] * SIZE) + 1, int(box[0] * SIZE) : int(box[2] * SIZE) + 1]
    assert _blobs(inside, grounded.color) == _blobs(pixels, grounded.color)  # and every pixel of that colour


def test_positions_follow_the_centres_of_the_drawn_groups():
    seen = set()
    for index in range(60):
        image, scene, _ = draw_scene(3, index, SIZE)
        position = scene_questions(scene, image, ("position",), random.Random(index))[0]
        if len(scene.groups) == 1:
            assert position.answer == scene.groups[0].region
            continue
        words = position.question.split()
        first = next(g for g in scene.groups if g.color == words[2])
        second = next(g for g in scene.groups if g.color == words[-2])
        (y0, x0), (y1, x1) = (np.nonzero((np.asarray(image) == COLORS[g.color]).all(-1)) for g in (first, second))
        dx, dy = x1.mean() - x0.mean(), y1.mean() - y0.mean()  # second's centre minus first's
        expected = ("left" if dx > 0 else "right") if abs(dx) > abs(dy) else ("above" if dy > 0 else "below")
        assert position.answer == expected
        seen.add(expected)
    assert seen == {"left", "right", "above", "below"}


def test_yes_and_no_are_both_common():
    answers = []
    for index in range(200):
        image, scene, _ = draw_scene(0, index, 32)
        answers.append(scene_questions(scene, image, ("yesno",), random.Random(index))[0].answer)
    assert 0.35 < answers.count("yes") / len(answers) < 0.65


def test_the_set_is_llava_json_held_out_by_scene(tmp_path):
    folder = SceneQuestionSet(num_train=200, num_test=100, image_size=16, seed=5).write(str(tmp_path))
    with open(f"{folder}/train.json") as f:
        records = json.load(f)
    assert set(records[0]) == {"id", "image", "conversations", "question_types"}
    assert [t["from"] for t in records[0]["conversations"]] == ["human", "gpt"]
    assert records[0]["conversations"][0]["value"].startswith(f"{IMAGE}\n")
    read = lambda name: read_conversations(ConversationSource.of(f"{folder}/{name}.json", name))[0]  # noqa: E731
    train, test, captions = read("train"), read("test"), read("captions")
    assert len(captions) == 200 and len({c.key for c in test}) == 100  # a record's id is its scene's index
    assert {c.turns[0].kind for c in test} == {"color", "count", "shape", "position", "yesno"}
    train_scenes = {draw_scene(5, int(c.key), 16)[1] for c in train}
    test_scenes = [draw_scene(5, int(c.key), 16)[1] for c in test]
    assert not train_scenes & set(test_scenes)
    indices = sorted({int(c.key) for c in test})
    skipped = set(range(200, indices[-1] + 1)) - set(indices)
    assert skipped and all(draw_scene(5, i, 16)[1] in train_scenes for i in skipped)  # skipped exactly the repeats


@pytest.mark.parametrize(
    "record, problem",
    [
        ({"image": "a.png", "conversations": []}, "non-empty"),
        ({"image": "a.png", "conversations": [{"from": "gpt", "value": "x"}, {"from": "human", "value": "y"}]}, "speakers"),
        ({"image": "a.png", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}, "<image>"),
        ({"image": "a.png", "conversations": [{"from": "human", "value": "<image> q"}]}, "pairs"),
    ],
)
def test_a_bad_record_is_refused_saying_why(record, problem):
    with pytest.raises(ValueError, match=problem):
        record_turns(record)
