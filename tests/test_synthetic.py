"""The embedded scene dataset: deterministic, captions that match the scenes, disjoint splits."""

import json
import os
import random

from clip_train.data.scenes import COLORS, SHAPES, describe_scene, make_pair, sample_scene
from clip_train.data.shard_writer import encode_image
from clip_train.data.synthetic import SyntheticShards


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
