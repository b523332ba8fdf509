"""The embedded scene dataset: deterministic, captions that match the scenes, disjoint splits."""

import json
import os
import random
import tarfile
from dataclasses import replace

import numpy as np

from clip_train.data.shard_writer import encode_image
from clip_train.data.world.scenes import COLORS, SHAPES, describe_scene, draw_shape_twin, make_pair, sample_scene
from clip_train.data.world.synthetic import SyntheticShards


def test_pairs_are_deterministic_per_seed_and_index():
    image_a, caption_a, _ = make_pair(seed=3, index=17, image_size=48)
    image_b, caption_b, _ = make_pair(seed=3, index=17, image_size=48)
    assert caption_a == caption_b and encode_image(image_a, "png") == encode_image(image_b, "png")
    others = {make_pair(seed=4, index=17, image_size=48)[1], make_pair(seed=3, index=18, image_size=48)[1]}
    assert others != {caption_a}


def test_captions_name_every_group_colour_and_shape_and_vary():
    rng = random.Random(0)
    captions = set()
    for _ in range(300):
        scene = sample_scene(rng)
        caption = describe_scene(scene, rng)
        captions.add(caption)
        for group in scene.groups:
            assert group.color in caption and group.shape in caption
        assert set(caption.split()) & set(COLORS) and any(shape in caption for shape in SHAPES)
    assert len(captions) > 250  # varied phrasing, not a handful of templates


def test_every_group_is_drawn_in_its_colour():
    for index in range(20):
        image, _, scene = make_pair(seed=0, index=index, image_size=64)
        pixels = {colour for _, colour in image.getcolors(maxcolors=64 * 64)}
        for group in scene.groups:
            assert COLORS[group.color] in pixels


def test_written_set_is_cached_and_splits_are_disjoint(tmp_path):
    spec = SyntheticShards(num_train=50, num_val=20, samples_per_shard=16, image_size=32, seed=1)
    train, val = spec.write(str(tmp_path))
    assert train.endswith("train-{00000..00003}.tar") and val.endswith("val-{00000..00001}.tar")
    folder = os.path.dirname(train)
    with open(os.path.join(folder, "sizes.json")) as f:
        sizes = json.load(f)
    assert sum(n for name, n in sizes.items() if name.startswith("train")) == 50
    assert sum(n for name, n in sizes.items() if name.startswith("val")) == 20
    stamp = os.path.getmtime(os.path.join(folder, "train-00000.tar"))
    assert spec.write(str(tmp_path)) == (train, val)
    assert os.path.getmtime(os.path.join(folder, "train-00000.tar")) == stamp
    assert [name for name in os.listdir(tmp_path) if name.startswith(".")] == []  # no staging left behind


def test_shape_twin_differs_from_its_scene_in_one_shape_only():
    for index in range(30):
        image, caption, scene = make_pair(seed=2, index=index, image_size=64)
        twin_image, twin_caption, twin = draw_shape_twin(seed=2, index=index, image_size=64)
        assert twin.background == scene.background and len(twin.groups) == len(scene.groups)
        differences = [(a, b) for a, b in zip(scene.groups, twin.groups) if a != b]
        assert len(differences) == 1
        ((original, altered),) = differences
        assert altered.shape != original.shape and replace(altered, shape=original.shape) == original
        words, twin_words = caption.split(), twin_caption.split()
        assert len(words) == len(twin_words) and sum(a != b for a, b in zip(words, twin_words)) == 1  # the same wording
        changed = np.any(np.asarray(image) != np.asarray(twin_image), axis=-1)
        assert 0 < changed.mean() < 0.25  # the same picture but the one group's outline


def _written_scenes(pattern: str) -> list[dict]:
    """The scene descriptions of every sample in the shards of a brace pattern, in key order."""
    first, last = (int(n) for n in pattern[pattern.index("{") + 1 : pattern.index("}")].split(".."))
    scenes = []
    for shard in range(first, last + 1):
        with tarfile.open(pattern[: pattern.index("{")] + f"{shard:05d}.tar") as tar:
            for member in sorted(m.name for m in tar.getmembers() if m.name.endswith(".json")):
                scenes.append(json.load(tar.extractfile(member))["scene"])
    return scenes


def _without_shapes(scene: dict) -> tuple:
    return scene["background"], [{k: v for k, v in group.items() if k != "shape"} for group in scene["groups"]]


def test_shape_twin_share_writes_couples_in_training_only(tmp_path):
    sizes = {"num_train": 64, "num_val": 16, "samples_per_shard": 32, "image_size": 32, "seed": 5}
    train, val = SyntheticShards(**sizes, shape_twin_share=0.5).write(str(tmp_path))
    plain_train, plain_val = SyntheticShards(**sizes).write(str(tmp_path))
    scenes, plain = _written_scenes(train), _written_scenes(plain_train)
    twins = [(a, b) for a, b in zip(scenes[0::2], scenes[1::2]) if _without_shapes(a) == _without_shapes(b)]
    assert 8 <= len(twins) <= 24  # about half of the 32 couples
    for a, b in twins:
        assert sum(ga["shape"] != gb["shape"] for ga, gb in zip(a["groups"], b["groups"])) == 1
    assert plain[0::2] == scenes[0::2] and plain != scenes  # a couple's first scene is the plain set's
    assert _written_scenes(val) == _written_scenes(plain_val)  # validation has no twins
