"""Questions with exact answers about one drawn scene (`clip_train.data.world.scenes`), read off its description.

A scene's groups have distinct colours (`sample_scene` draws two different ones), so "the red object" always
names one group; a shape may repeat, so questions that name a shape count or colour every group of it. Each
question type asks what the image alone can answer:

    color     what color is the circle?                        -> red      (only when one group has that shape)
    count     how many squares / red objects are there?       -> 2        (0 for one that is absent)
    shape     what shape is the blue object?                   -> triangle
    position  where is the green cross?                        -> left     (one group: its region)
              is the red circle above or below the blue square? -> above (two groups)
    yesno     is there a yellow diamond?                       -> yes | no (half of each, from the scene's rng)
    grounding give the box of the red circle.                  -> <loc_x0><loc_y0><loc_x1><loc_y1>

Boxes come from the drawn pixels (every group's colour is its own), in Florence-2's location tokens: each
coordinate as a fraction of the side in 1000 bins.
"""

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image

from clip_train.data.world.scenes import COLORS, SHAPES, Scene

QUESTION_TYPES = ("color", "count", "shape", "position", "yesno", "grounding")
LOCATION_BINS = 1000
RELATIONS = {("left", "right"): ("left", "right", " of"), ("top", "bottom"): ("above", "below", "")}  # + how to ask


@dataclass(frozen=True)
class Question:
    kind: str
    question: str
    answer: str


def plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("s") else "s")


def _color(scene: Scene, rng: random.Random) -> Question | None:
    shapes = [group.shape for group in scene.groups]
    unique = [group for group in scene.groups if shapes.count(group.shape) == 1]
    if not unique:
        return None
    group = rng.choice(unique)
    if group.count > 1:
        return Question("color", f"what color are the {plural(group.shape)}?", group.color)
    return Question("color", f"what color is the {group.shape}?", group.color)


def _count(scene: Scene, rng: random.Random) -> Question:
    """By colour or by shape, half each; a fifth of them name one the scene lacks (answer 0)."""
    by_color = rng.random() < 0.5
    present = [group.color if by_color else group.shape for group in scene.groups]
    absent = [word for word in (COLORS if by_color else SHAPES) if word not in present]
    word = rng.choice(present) if rng.random() < 0.8 else rng.choice(absent)
    total = sum(group.count for group in scene.groups if word in (group.color, group.shape))
    what = f"{word} objects" if by_color else plural(word)
    return Question("count", f"how many {what} are there?", str(total))


def _shape(scene: Scene, rng: random.Random) -> Question:
    group = rng.choice(scene.groups)
    return Question("shape", f"what shape is the {group.color} object?", group.shape)


def _position(scene: Scene, rng: random.Random) -> Question:
    if len(scene.groups) == 1:
        group = scene.groups[0]
        return Question("position", f"where is the {group.color} {group.shape}?", group.region)
    first, second = scene.groups if rng.random() < 0.5 else scene.groups[::-1]
    regions = (scene.groups[0].region, scene.groups[1].region)
    before, after, joint = RELATIONS[regions]
    answer = before if first is scene.groups[0] else after
    return Question(
        "position", f"is the {first.color} {first.shape} {before} or {after}{joint} the {second.color} {second.shape}?", answer
    )


def _yesno(scene: Scene, rng: random.Random) -> Question:
    group = rng.choice(scene.groups)
    color, shape = group.color, group.shape
    if rng.random() < 0.5:  # a pair no group has: change the colour, the shape or both
        present = {(g.color, g.shape) for g in scene.groups}
        while (color, shape) in present:
            color = rng.choice(list(COLORS)) if rng.random() < 0.5 else color
            shape = rng.choice(SHAPES) if rng.random() < 0.5 else shape
    answer = "yes" if any(g.color == color and g.shape == shape for g in scene.groups) else "no"
    return Question("yesno", f"is there a {color} {shape}?", answer)


def group_box(image: Image.Image, color: str) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) as fractions of the side: the extent of the pixels drawn in `color`'s exact RGB."""
    pixels = np.asarray(image.convert("RGB"))
    ys, xs = np.nonzero((pixels == np.array(COLORS[color], dtype=pixels.dtype)).all(axis=-1))
    if len(xs) == 0:
        raise ValueError(f"no pixel of {color} in the image: the scene and the image do not match")
    height, width = pixels.shape[:2]
    return xs.min() / width, ys.min() / height, (xs.max() + 1) / width, (ys.max() + 1) / height


def location_tokens(box: tuple[float, float, float, float]) -> str:
    """A box in fractions -> Florence-2's `<loc_x0><loc_y0><loc_x1><loc_y1>`, each in 0..LOCATION_BINS-1."""
    bins = [min(LOCATION_BINS - 1, int(value * LOCATION_BINS)) for value in box]
    return "".join(f"<loc_{value}>" for value in bins)


def _grounding(scene: Scene, rng: random.Random, image: Image.Image) -> Question:
    group = rng.choice(scene.groups)
    what = f"{group.color} {plural(group.shape) if group.count > 1 else group.shape}"
    return Question("grounding", f"give the box of the {what}.", location_tokens(group_box(image, group.color)))


def scene_questions(scene: Scene, image: Image.Image, kinds: tuple[str, ...], rng: random.Random) -> list[Question]:
    """One question of each of `kinds` (a subset of QUESTION_TYPES) that `scene` can answer, in that order."""
    unknown = set(kinds) - set(QUESTION_TYPES)
    if unknown:
        raise ValueError(f"unknown question types {sorted(unknown)}: choose from {list(QUESTION_TYPES)}")
    makers = {"color": _color, "count": _count, "shape": _shape, "position": _position, "yesno": _yesno}
    questions = []
    for kind in kinds:
        question = _grounding(scene, rng, image) if kind == "grounding" else makers[kind](scene, rng)
        if question is not None:
            questions.append(question)
    return questions
