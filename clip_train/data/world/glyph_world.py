"""A second drawn world that no default trains on: patterned glyphs on a 3×3 board, for learning benchmarks.

The embedded scenes (`clip_train.data.world.scenes`) are what every default is tuned on, so a learning
comparison measured there flatters the defaults. This world shares none of their content: other
objects (`GLYPHS`), other colour words, fill patterns, a 3×3 grid of places with their own phrases,
other backgrounds and another caption grammar. A caption names every attribute of every glyph, so
retrieval has to read colour, outline, fill, size and place, in 37 words (`VOCABULARY`). Sample `i` of
seed `s` depends only on `(s, i)`.

    python scripts/benchmark_learning_vs_openclip.py     # writes it once, then trains ours and OpenCLIP on it
"""

import math
import os
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from clip_train.data.shard_writer import Sample, write_shards

VERSION = 2  # part of the benchmark's cache folder name: a change to the drawing or wording writes a new world
COLOURS = {
    "crimson": (200, 20, 60),
    "teal": (0, 128, 128),
    "navy": (20, 30, 120),
    "gold": (230, 180, 20),
    "lime": (150, 230, 40),
    "violet": (150, 90, 230),
    "coral": (255, 120, 90),
    "olive": (110, 110, 20),
}
GLYPHS = ("star", "heart", "ring", "arrow", "crescent", "hexagon", "bolt", "bar")
FILLS = ("plain", "striped", "dotted")
SIZES = {"tiny": 0.12, "big": 0.19}  # half-extent as a fraction of the canvas side
BACKGROUNDS = {"sand": (225, 205, 160), "slate": (90, 100, 110), "ink": (25, 25, 35)}
ROWS, COLUMNS = ("upper", "middle", "lower"), ("left", "centre", "right")
PLACE_PHRASES = {
    ("upper", "left"): "top left corner", ("upper", "centre"): "top edge", ("upper", "right"): "top right corner",
    ("middle", "left"): "left edge", ("middle", "centre"): "very centre", ("middle", "right"): "right edge",
    ("lower", "left"): "bottom left corner", ("lower", "centre"): "bottom edge", ("lower", "right"): "bottom right corner",
}  # fmt: skip
CONNECTIVES = ("in the", "a", "and", "on")
VOCABULARY = frozenset(
    [*COLOURS, *GLYPHS, *FILLS, *SIZES, *BACKGROUNDS]
    + [word for phrase in (*PLACE_PHRASES.values(), *CONNECTIVES) for word in phrase.split()]
)  # the 37 words captions use


@dataclass(frozen=True)
class Glyph:
    """One glyph: its colour, outline, fill pattern, size and cell of the 3×3 board (row, column)."""

    colour: str
    kind: str
    fill: str
    size: str
    cell: tuple[int, int]


@dataclass(frozen=True)
class Board:
    background: str
    glyphs: tuple[Glyph, ...]


def sample_board(rng: random.Random) -> Board:
    """One glyph (60%), or two in distinct cells with distinct colours."""
    count = 1 if rng.random() < 0.6 else 2
    cells = rng.sample([(r, c) for r in range(3) for c in range(3)], count)
    colours = rng.sample(list(COLOURS), count)
    glyphs = tuple(
        Glyph(colour, rng.choice(GLYPHS), rng.choice(FILLS), rng.choice(list(SIZES)), cell)
        for colour, cell in zip(colours, cells)
    )
    return Board(rng.choice(list(BACKGROUNDS)), glyphs)


def _polygon(kind: str, x: float, y: float, r: float) -> list[tuple[float, float]]:
    """The outline of a polygonal glyph of half-extent `r` centred at (x, y)."""
    if kind == "star":
        return [
            (x + (r if i % 2 == 0 else 0.45 * r) * math.sin(i * math.pi / 5),
             y - (r if i % 2 == 0 else 0.45 * r) * math.cos(i * math.pi / 5))
            for i in range(10)
        ]  # fmt: skip
    if kind == "hexagon":
        return [(x + r * math.cos(i * math.pi / 3), y + r * math.sin(i * math.pi / 3)) for i in range(6)]
    if kind == "arrow":  # pointing right
        return [
            (x - r, y - 0.3 * r),
            (x, y - 0.3 * r),
            (x, y - r),
            (x + r, y),
            (x, y + r),
            (x, y + 0.3 * r),
            (x - r, y + 0.3 * r),
        ]
    if kind == "bolt":
        return [(x + 0.2 * r, y - r), (x - 0.6 * r, y + 0.15 * r), (x - 0.05 * r, y + 0.15 * r), (x - 0.2 * r, y + r),
                (x + 0.6 * r, y - 0.15 * r), (x + 0.05 * r, y - 0.15 * r)]  # fmt: skip
    if kind == "bar":
        return [(x - r, y - 0.35 * r), (x + r, y - 0.35 * r), (x + r, y + 0.35 * r), (x - r, y + 0.35 * r)]
    raise ValueError(f"no polygon for glyph {kind!r}")


def _mask(kind: str, x: float, y: float, r: float, size: int) -> Image.Image:
    """The glyph's silhouette as an 'L' mask over the whole canvas."""
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    box = [x - r, y - r, x + r, y + r]
    if kind == "ring":
        draw.ellipse(box, fill=255)
        draw.ellipse([x - 0.55 * r, y - 0.55 * r, x + 0.55 * r, y + 0.55 * r], fill=0)
    elif kind == "crescent":
        draw.ellipse(box, fill=255)
        draw.ellipse([x - 0.45 * r, y - r, x + 1.55 * r, y + r], fill=0)
    elif kind == "heart":
        lobe = 0.52 * r
        draw.ellipse([x - 2 * lobe, y - r, x, y - r + 2 * lobe], fill=255)
        draw.ellipse([x, y - r, x + 2 * lobe, y - r + 2 * lobe], fill=255)
        draw.polygon([(x - 2 * lobe + 0.5, y - r + 1.3 * lobe), (x + 2 * lobe - 0.5, y - r + 1.3 * lobe), (x, y + r)], fill=255)
    else:
        draw.polygon(_polygon(kind, x, y, r), fill=255)
    return mask


def _pattern(fill: str, colour: tuple[int, int, int], background: tuple[int, int, int], size: int) -> Image.Image:
    """The paint a glyph is cut from: its colour plain, in diagonal stripes, or dotted on a paler tint."""
    if fill == "plain":
        return Image.new("RGB", (size, size), colour)
    pale = tuple((c + b) // 2 for c, b in zip(colour, background))
    paint = Image.new("RGB", (size, size), pale)
    draw = ImageDraw.Draw(paint)
    if fill == "striped":
        for offset in range(-size, size, 4):
            draw.line([(offset, 0), (offset + size, size)], fill=colour, width=2)
    else:
        for cy in range(1, size, 4):
            for cx in range(1, size, 4):
                draw.rectangle([cx, cy, cx + 1, cy + 1], fill=colour)
    return paint


def render_board(board: Board, size: int, rng: random.Random) -> Image.Image:
    """Draw `board` on a `size`×`size` canvas; `rng` jitters each glyph inside its cell."""
    image = Image.new("RGB", (size, size), BACKGROUNDS[board.background])
    for glyph in board.glyphs:
        r = SIZES[glyph.size] * size
        x = (glyph.cell[1] + 0.5 + rng.uniform(-0.08, 0.08)) * size / 3
        y = (glyph.cell[0] + 0.5 + rng.uniform(-0.08, 0.08)) * size / 3
        paint = _pattern(glyph.fill, COLOURS[glyph.colour], BACKGROUNDS[board.background], size)
        image.paste(paint, (0, 0), _mask(glyph.kind, x, y, r, size))
    return image


def describe_board(board: Board, rng: random.Random) -> str:
    """A caption naming every glyph's size, fill, colour, outline and cell, in one of two orders, glyphs in
    random order; the background is named half the time."""
    parts = []
    for glyph in board.glyphs:
        place = PLACE_PHRASES[(ROWS[glyph.cell[0]], COLUMNS[glyph.cell[1]])]
        what = f"{glyph.size} {glyph.fill} {glyph.colour} {glyph.kind}"
        parts.append(rng.choice((f"{what} in the {place}", f"in the {place} a {what}")))
    rng.shuffle(parts)
    caption = " and ".join(parts)
    return f"{caption} on {board.background}" if rng.random() < 0.5 else caption


def make_glyph_pair(seed: int, index: int, image_size: int) -> tuple[Image.Image, str, Board]:
    """The image, caption and board of sample `index` in the stream of `seed`."""
    rng = random.Random(f"glyphs/{seed}/{index}")
    board = sample_board(rng)
    return render_board(board, image_size, rng), describe_board(board, rng), board


def write_glyph_world(
    folder: str, num_train: int = 20_000, num_val: int = 1000, num_shards: int = 10, image_size: int = 64, seed: int = 0
) -> tuple[str, str]:
    """Write `num_train` training pairs as `num_shards` plain tars (no sizes.json: the reader counts them, as it
    would a user's) and `num_val` validation pairs as one, under `folder`; returns the (train, val) brace patterns.
    Validation samples take the indices after the training ones, so the splits share no pair."""
    per_shard = -(-num_train // num_shards)
    train = (Sample(f"{i:09d}", *make_glyph_pair(seed, i, image_size)[:2]) for i in range(num_train))
    val = (Sample(f"{i:09d}", *make_glyph_pair(seed, i, image_size)[:2]) for i in range(num_train, num_train + num_val))
    train_paths = write_shards(folder, "train", train, per_shard)
    write_shards(folder, "val", val, num_val)
    os.remove(os.path.join(folder, "sizes.json"))
    return (
        os.path.join(folder, f"train-{{00000..{len(train_paths) - 1:05d}}}.tar"),
        os.path.join(folder, "val-00000.tar"),
    )
