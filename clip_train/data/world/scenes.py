"""Procedural image-caption pairs: drawn scenes of coloured shapes and phrases describing them.

This is the embedded default dataset. A scene holds one or two groups of objects; every group
has a colour, a shape, a size, a count and a place. The caption names those attributes in one
of several phrasings, so a model must learn colour, shape, count and layout to retrieve the
right pair. Scene `i` of seed `s` depends only on `(s, i)`, so any split is reproducible and
shards can be written in any order.
"""

import random
from dataclasses import dataclass, replace

from PIL import Image, ImageDraw

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
    "pink": (245, 130, 190),
    "brown": (130, 80, 40),
}
BACKGROUNDS = {"white": (245, 245, 245), "gray": (128, 128, 128), "black": (15, 15, 15)}
SHAPES = ("circle", "square", "triangle", "cross", "diamond")
SIZES = {"small": 0.11, "large": 0.2}  # half-extent as a fraction of the canvas side
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
REGIONS = {  # centre of the region, as fractions of the canvas
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
    "center": (0.5, 0.5),
}
REGION_PHRASES = {
    "left": ("on the left", "at the left side", "in the left half"),
    "right": ("on the right", "at the right side", "in the right half"),
    "top": ("at the top", "near the top", "in the upper half"),
    "bottom": ("at the bottom", "near the bottom", "in the lower half"),
    "center": ("in the middle", "in the center", "at the centre"),
}


@dataclass(frozen=True)
class ObjectGroup:
    """`count` identical objects placed around the centre of `region`."""

    color: str
    shape: str
    size: str
    count: int
    region: str


@dataclass(frozen=True)
class Scene:
    background: str
    groups: tuple[ObjectGroup, ...]


def sample_scene(rng: random.Random) -> Scene:
    """One group anywhere, or two groups side by side (left/right) or stacked (top/bottom)."""
    background = rng.choice(list(BACKGROUNDS))
    colors = rng.sample(list(COLORS), 2)
    if rng.random() < 0.5:
        group = ObjectGroup(
            colors[0], rng.choice(SHAPES), rng.choice(list(SIZES)), rng.choice((1, 1, 2, 3)), rng.choice(list(REGIONS))
        )
        return Scene(background, (group,))
    first, second = rng.choice((("left", "right"), ("top", "bottom")))
    groups = tuple(
        ObjectGroup(color, rng.choice(SHAPES), rng.choice(list(SIZES)), 1, region)
        for color, region in zip(colors, (first, second))
    )
    return Scene(background, groups)


def _shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    if shape == "cross":
        t = r / 3
        return [
            (cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t), (cx + r, cy + t), (cx + t, cy + t),
            (cx + t, cy + r), (cx - t, cy + r), (cx - t, cy + t), (cx - r, cy + t), (cx - r, cy - t), (cx - t, cy - t),
        ]  # fmt: skip
    raise ValueError(f"no polygon for shape {shape!r}")


def render_scene(scene: Scene, size: int, rng: random.Random) -> Image.Image:
    """Draw `scene` on a `size`×`size` RGB canvas; `rng` jitters positions so no two images match."""
    image = Image.new("RGB", (size, size), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    for group in scene.groups:
        r = SIZES[group.size] * size * (0.75 if group.count > 1 else 1.0)
        cx, cy = (f * size for f in REGIONS[group.region])
        offsets = _cluster_offsets(group.count, group.region, r)
        for dx, dy in offsets:
            x = cx + dx + rng.uniform(-0.05, 0.05) * size
            y = cy + dy + rng.uniform(-0.05, 0.05) * size
            fill = COLORS[group.color]
            if group.shape == "circle":
                draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
            else:
                draw.polygon(_shape_polygon(group.shape, x, y, r), fill=fill)
    return image


def _cluster_offsets(count: int, region: str, r: float) -> list[tuple[float, float]]:
    """Spread several objects along the free axis of their region so they do not overlap."""
    if count == 1:
        return [(0.0, 0.0)]
    step = 2.2 * r
    spread = [(i - (count - 1) / 2) * step for i in range(count)]
    if region in ("left", "right"):
        return [(0.0, s) for s in spread]
    return [(s, 0.0) for s in spread]


def _group_phrase(group: ObjectGroup, with_size: bool) -> str:
    size = f"{group.size} " if with_size else ""
    if group.count == 1:
        return f"a {size}{group.color} {group.shape}"
    plural = group.shape + ("es" if group.shape.endswith("s") else "s")
    return f"{COUNT_WORDS[group.count]} {size}{group.color} {plural}"


def describe_scene(scene: Scene, rng: random.Random) -> str:
    """A caption in one of several phrasings; it always names every group's colour and shape."""
    with_size = rng.random() < 0.6
    background = f" on a {scene.background} background" if rng.random() < 0.4 else ""
    if len(scene.groups) == 1:
        group = scene.groups[0]
        what = _group_phrase(group, with_size)
        where = rng.choice(REGION_PHRASES[group.region])
        template = rng.choice(("{what} {where}{bg}", "a picture of {what} {where}{bg}", "{where}, {what}{bg}"))
        return template.format(what=what, where=where, bg=background)
    a, b = scene.groups
    first, second = _group_phrase(a, with_size), _group_phrase(b, with_size)
    if a.region == "left":
        relation, inverse = "to the left of", "to the right of"
    else:
        relation, inverse = "above", "below"
    if rng.random() < 0.5:
        return f"{first} {relation} {second}{background}"
    return f"{second} {inverse} {first}{background}"


def draw_scene(seed: int, index: int, image_size: int) -> tuple[Image.Image, Scene, random.Random]:
    """The image and scene of sample `index` in the stream of `seed`, and the random stream where its caption
    is drawn: `describe_scene(scene, rng)` is the sample's caption. Describing an altered scene from a copy
    of that stream words it the same way (`clip_train.eval.scene_negatives`)."""
    rng = random.Random(f"{seed}/{index}")
    scene = sample_scene(rng)
    return render_scene(scene, image_size, rng), scene, rng


def draw_shape_twin(seed: int, index: int, image_size: int) -> tuple[Image.Image, str, Scene]:
    """Sample `index`'s scene with one group's shape replaced, drawn and worded from the very same random
    stream: the same places, jitter and phrasing, so image and caption differ from `make_pair`'s only in
    that shape. Side by side in a batch, the two are negatives that only shape tells apart."""
    rng = random.Random(f"{seed}/{index}")
    scene = sample_scene(rng)
    choose = random.Random(f"{seed}/{index}/shape-twin")
    which = choose.randrange(len(scene.groups))
    group = scene.groups[which]
    changed = replace(group, shape=choose.choice([shape for shape in SHAPES if shape != group.shape]))
    twin = Scene(scene.background, scene.groups[:which] + (changed,) + scene.groups[which + 1 :])
    image = render_scene(twin, image_size, rng)
    return image, describe_scene(twin, rng), twin


def make_pair(seed: int, index: int, image_size: int) -> tuple[Image.Image, str, Scene]:
    """The image, caption and scene of sample `index` in the stream of `seed`."""
    image, scene, rng = draw_scene(seed, index, image_size)
    return image, describe_scene(scene, rng), scene
