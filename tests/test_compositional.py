"""Compositional evaluation: negatives are false captions of their scene, and accuracies are counted as a
brute-force loop counts them (a bag-of-words model sits exactly at chance on the word-order kinds)."""

import random
import re
import zlib
from dataclasses import replace

import pytest
import torch
from gloo import on_gloo_ranks

from clip_train.data.caption_negatives import COLOUR_WORDS, KINDS, hard_negatives, perturb
from clip_train.data.world.scenes import describe_scene, draw_scene, make_pair
from clip_train.eval.compositional import CompositionalTask
from clip_train.eval.scene_negatives import scene_negatives

FIRST, SCENES = 8192, 40


def every_wording(scene) -> set[str]:
    """Every caption describe_scene can give `scene`: its few phrasings, found by drawing many times."""
    return {describe_scene(scene, random.Random(draw)) for draw in range(400)}


def test_scene_negatives_are_false_captions_in_the_true_wording():
    kinds_seen = set()
    for index in range(FIRST, FIRST + SCENES):
        _, scene, stream = draw_scene(0, index, 16)
        caption, negatives = scene_negatives(scene, stream, random.Random(index))
        assert caption == make_pair(0, index, 16)[1]  # the stream was left where the caption is drawn
        true_captions = every_wording(scene)
        for kind, negative in negatives.items():
            assert negative not in true_captions, (kind, caption, negative)
        for kind in ("swap_attributes", "relation", "word_order"):  # a bag of words cannot tell these apart
            if kind in negatives:
                assert sorted(re.findall("[a-z]+", negatives[kind])) == sorted(re.findall("[a-z]+", caption)), kind
        kinds_seen |= negatives.keys()
        assert ("count" in negatives) == (len(scene.groups) == 1)
        assert ("swap_attributes" in negatives) == ("relation" in negatives) == (len(scene.groups) == 2)
    assert kinds_seen == set(KINDS)


@pytest.mark.parametrize(
    "caption, kind, expected",
    [
        ("a red circle above a blue square", "swap_attributes", "a blue circle above a red square"),
        ("a red circle above a blue square", "relation", "a red circle below a blue square"),
        ("Two dogs to the left of a cat", "relation", "Two dogs to the right of a cat"),
        ("a dog chasing a cat on the grass", "relation", "a cat chasing a dog on the grass"),
        ("two small green crosses at the top", "count", None),  # replaced by one or three: checked below
        ("a photo of a dog", "colour", None),
        ("a photo of a dog", "swap_attributes", None),
        ("a red circle", "swap_attributes", None),
        ("dog", "word_order", None),
    ],
)
def test_caption_rules(caption, kind, expected):
    negative = perturb(caption, kind, random.Random(0))
    if kind == "count":
        assert negative in {"one small green crosses at the top", "three small green crosses at the top"}
    else:
        assert negative == expected


def test_caption_rules_replace_one_word_of_their_list():
    rng = random.Random(0)
    for _ in range(20):
        words = "a red circle on a gray background".split()
        colour = perturb(" ".join(words), "colour", rng).split()
        changed = [i for i, (a, b) in enumerate(zip(words, colour)) if a != b]
        assert len(colour) == len(words) and len(changed) == 1 and changed[0] in (1, 5)
        assert colour[changed[0]] in COLOUR_WORDS and colour[changed[0]] not in {"red", "gray", "grey"}
        shape = perturb("two purple crosses", "shape", rng).split()
        assert shape[:2] == ["two", "purple"] and shape[2] in {"circles", "squares", "triangles", "diamonds"}


def test_caption_rules_never_describe_the_true_scene():
    """On the embedded captions the rules are exact: no negative is any wording of the caption's own scene."""
    rng = random.Random(0)
    for index in range(60):
        _, caption, scene = make_pair(0, index, 16)
        true_captions = every_wording(scene)
        for negative in hard_negatives(caption, 6, rng):
            assert negative not in true_captions, (caption, negative)
        assert len(set(hard_negatives(caption, 3, rng))) == 3  # every embedded caption offers at least three


class BagOfWordsModel:
    """A stand-in ClipModel: an image is its mean colour per quadrant, projected; a caption the normalised sum of
    fixed random word vectors, so word order cannot matter."""

    device = torch.device("cpu")

    def __init__(self, dim: int = 8):
        self.projection = torch.randn(12, dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        self.dim = dim

    def encode_image(self, images) -> torch.Tensor:
        pixels = torch.stack([torch.tensor(list(image.resize((2, 2)).tobytes()), dtype=torch.float64) for image in images])
        return torch.nn.functional.normalize(pixels.reshape(len(images), 12) @ self.projection, dim=-1)

    def encode_text(self, texts) -> torch.Tensor:
        def word(w):
            return torch.randn(self.dim, generator=torch.Generator().manual_seed(zlib.crc32(w.encode())), dtype=torch.float64)

        bags = [sorted(re.findall("[a-z]+", text.lower())) for text in texts]  # summed in one order: equal bags, equal vectors
        return torch.nn.functional.normalize(torch.stack([sum(word(w) for w in bag) for bag in bags]), dim=-1)


def brute_force_accuracies(model, spec) -> dict[str, float]:
    wins, comparisons = {}, {}
    for index in range(spec.first_scene, spec.first_scene + spec.scenes):
        image, scene, stream = draw_scene(spec.scenes_seed, index, spec.image_size)
        caption, negatives = scene_negatives(scene, stream, random.Random(f"compositional/{index}"))
        image_feature = model.encode_image([image])[0]
        true_score = float(image_feature @ model.encode_text([caption])[0])
        for kind, negative in negatives.items():
            score = float(image_feature @ model.encode_text([negative])[0])
            wins[kind] = wins.get(kind, 0.0) + (1.0 if true_score > score else 0.5 if true_score == score else 0.0)
            comparisons[kind] = comparisons.get(kind, 0) + 1
    accuracies = {kind: wins[kind] / comparisons[kind] for kind in KINDS}
    return accuracies | {"mean": sum(accuracies.values()) / len(accuracies)}


def test_accuracies_equal_a_brute_force_count_and_bags_of_words_sit_at_chance():
    spec = CompositionalTask(first_scene=FIRST, scenes=SCENES, image_size=16)
    got = replace(spec, batch_size=7).run(BagOfWordsModel(), 0, 1)
    assert got == pytest.approx(brute_force_accuracies(BagOfWordsModel(), spec))
    for kind in ("swap_attributes", "relation", "word_order"):  # same words, same bag: a tie on every image
        assert got[kind] == 0.5


def _rank_metrics(rank: int, world: int, spec) -> dict:
    return replace(spec, batch_size=5).run(BagOfWordsModel(), rank, world)


@pytest.mark.slow
def test_two_ranks_count_like_one_process(tmp_path):
    spec = CompositionalTask(first_scene=FIRST, scenes=SCENES - 1, image_size=16)  # 39 scenes: 20 + 19
    expected = spec.run(BagOfWordsModel(), 0, 1)
    for got in on_gloo_ranks(_rank_metrics, 2, tmp_path, spec):
        assert got == pytest.approx(expected)


def test_shards_use_the_caption_rules(tmp_path):
    from helpers import colour_samples

    from clip_train.data.shard_writer import write_shards

    write_shards(str(tmp_path), "val", colour_samples(12), samples_per_shard=6)
    spec = CompositionalTask(shards=str(tmp_path / "val-{00000..00001}.tar"), kinds=["colour", "shape"])
    got = spec.run(BagOfWordsModel(), 0, 1)
    assert set(got) == {"colour", "shape", "mean"}  # "a red square": one colour, one shape, no relation
    with pytest.raises(ValueError, match="no kind 'size'"):
        CompositionalTask(kinds=["size"])
