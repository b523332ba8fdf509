"""Exact hard-negative captions for the embedded scenes, built from their scene descriptions.

A negative is the caption of an altered scene, worded from a copy of the random stream that
worded the true caption (`clip_train.data.world.scenes.draw_scene`), so it says the same thing in the
same phrasing except for the alteration, and it is false by construction:

    swap_attributes  two-group scenes: the groups' colours exchanged   (same words, other binding)
    relation         two-group scenes: the two objects exchange places  (same words, relation inverted)
    word_order       the true caption's words shuffled
    colour           one group's colour replaced by a colour absent from the scene
    shape            one group's shape replaced by another shape
    count            one-group scenes: the count replaced by another of 1, 2, 3

Colours of a two-group scene always differ, so both two-group kinds change the scene.
"""

import random
from dataclasses import replace

from clip_train.data.caption_negatives import perturb
from clip_train.data.world.scenes import COLORS, COUNT_WORDS, SHAPES, Scene, describe_scene


def _worded_like(state: tuple):
    """describe_scene with the caption stream replayed from `state` each time."""

    def describe(scene: Scene) -> str:
        rng = random.Random()
        rng.setstate(state)
        return describe_scene(scene, rng)

    return describe


def scene_negatives(scene: Scene, caption_stream: random.Random, rng: random.Random) -> tuple[str, dict[str, str]]:
    """(the true caption, {kind: one negative caption}) for `scene`, the kinds that apply to it.

    caption_stream: positioned where the scene's caption is drawn (left unchanged);
    rng: chooses which group and which replacement.
    """
    describe = _worded_like(caption_stream.getstate())
    caption = describe(scene)
    groups, background = scene.groups, scene.background
    negatives = {}
    if len(groups) == 2:
        a, b = groups
        negatives["swap_attributes"] = describe(Scene(background, (replace(a, color=b.color), replace(b, color=a.color))))
        moved = (replace(b, region=a.region), replace(a, region=b.region))
        negatives["relation"] = describe(Scene(background, moved))
    shuffled = perturb(caption, "word_order", rng)
    if shuffled is not None:
        negatives["word_order"] = shuffled
    index = rng.randrange(len(groups))
    group = groups[index]

    def altered(**change) -> str:
        return describe(Scene(background, groups[:index] + (replace(group, **change),) + groups[index + 1 :]))

    used = {g.color for g in groups}
    negatives["colour"] = altered(color=rng.choice([c for c in COLORS if c not in used]))
    negatives["shape"] = altered(shape=rng.choice([s for s in SHAPES if s != group.shape]))
    if len(groups) == 1:
        negatives["count"] = altered(count=rng.choice([n for n in COUNT_WORDS if n != group.count]))
    return caption, negatives
