"""Evaluation: zero-shot on an ImageFolder, multi-caption retrieval from shards, both under 2 gloo processes,
and zero-shot with a rank that gets no image."""

import io
import math
import os
from dataclasses import replace

import numpy as np
import pytest
import torch
from gloo import on_gloo_ranks
from helpers import COLORS, tiny_clip_model
from PIL import Image

from clip_train.data.shard_writer import Sample, write_shards
from clip_train.eval.retrieval import RetrievalTask
from clip_train.eval.synthetic_sets import write_class_folders
from clip_train.eval.zeroshot import ZeroShotTask, image_folder

WORLD = 2


class ColourModel:
    """Stands in for a ClipModel with features known exactly: an image is embedded as its normalised
    mean RGB, a prompt as the normalised RGB of the colour it names."""

    device = torch.device("cpu")

    def __init__(self):
        self.embed_dim = 3

    @staticmethod
    def preprocess_encoded(data: bytes) -> torch.Tensor:
        image = Image.open(io.BytesIO(data)).convert("RGB")
        return torch.from_numpy(np.asarray(image.resize((4, 4)), dtype=np.float32)).permute(2, 0, 1)

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(pixels.mean(dim=(2, 3)), dim=-1)

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        rgb = [next(value for name, value in COLORS.items() if name in prompt) for prompt in prompts]
        return torch.nn.functional.normalize(torch.tensor(rgb, dtype=torch.float32), dim=-1)


def _folder(root, images: dict[str, list[str]]) -> str:
    """An ImageFolder: class folder -> solid-colour images of the named colours."""
    for folder, colours in images.items():
        os.makedirs(root / folder, exist_ok=True)
        for index, colour in enumerate(colours):
            Image.new("RGB", (8, 8), COLORS[colour]).save(root / folder / f"{index}.png")
    return str(root)


def test_zero_shot_on_an_image_folder_with_known_features(tmp_path):
    # the second "green" image is yellow (230, 230, 30): its nearest class is yellow, so green scores 1/2
    root = _folder(tmp_path / "set", {"blue": ["blue", "blue"], "green": ["green", "yellow"], "yellow": ["yellow"]})
    (tmp_path / "templates.txt").write_text("a {} square\na photo of {}\n")
    spec = ZeroShotTask(root=root, templates=str(tmp_path / "templates.txt"))
    result = spec.run(ColourModel(), 0, 1)
    assert result["top1"] == pytest.approx(4 / 5)
    assert result["top5"] == 1.0  # 3 classes: every label is in the top 3
    assert result["per_class"] == {"blue": 1.0, "green": 0.5, "yellow": 1.0}
    assert result["mean_per_class_recall"] == pytest.approx((1 + 0.5 + 1) / 3)  # balanced: each class counts once
    first_only = replace(spec, images_per_class=1).run(ColourModel(), 0, 1)
    assert first_only["top1"] == 1.0 and first_only["per_class"]["green"] == 1.0


def _zeroshot_share(rank: int, world: int, spec: ZeroShotTask) -> dict:
    return spec.run(ColourModel(), rank, world)


@pytest.mark.slow
def test_a_rank_without_images_joins_and_gets_the_same_accuracy(tmp_path):
    # 2 images over 3 ranks: rank 2 encodes nothing. The yellow image in "green" misses, so top-1 is 1/2
    spec = ZeroShotTask(root=_folder(tmp_path / "set", {"green": ["yellow"], "yellow": ["yellow"]}), templates="default")
    assert spec.run(ColourModel(), 0, 1)["top1"] == 0.5
    for got in on_gloo_ranks(_zeroshot_share, 3, tmp_path, spec):
        assert got == {"top1": 0.5, "top5": 1.0, "mean_per_class_recall": 0.5, "per_class": {"green": 0.0, "yellow": 1.0}}


def test_corrupt_images_and_bad_layouts_name_the_culprit(tmp_path):
    root = _folder(tmp_path / "set", {"blue": ["blue"], "red": ["red"]})
    (tmp_path / "set" / "red" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match="cannot read the image .*broken.png"):
        ZeroShotTask(root=root).run(ColourModel(), 0, 1)
    os.makedirs(tmp_path / "set" / "green")
    with pytest.raises(ValueError, match="class folder .*green.* holds no image"):
        image_folder(root)
    with pytest.raises(ValueError, match="needs a root"):  # named by its config path: test_configs
        ZeroShotTask(classnames="x.txt")


def test_drawn_sets_are_deterministic_and_carry_their_prompts(tmp_path):
    root = write_class_folders("colours", str(tmp_path / "a"), per_class=2, image_size=32)
    again = write_class_folders("colours", str(tmp_path / "b"), per_class=2, image_size=32)
    paths, labels, names = image_folder(root)
    assert names == sorted(["red", "green", "blue", "yellow", "purple", "orange", "pink", "brown"])
    assert len(paths) == 16 and labels == [c for c in range(8) for _ in range(2)]
    assert all(open(p, "rb").read() == open(p.replace(root, again), "rb").read() for p in paths)
    templates = ZeroShotTask(root=root).resolved_templates(root)
    assert "a {} circle" in templates and len(templates) == 5
    with pytest.raises(ValueError, match="no synthetic zero-shot set 'animals'"):
        write_class_folders("animals", str(tmp_path))


def _marked(colour: str, index: int) -> Image.Image:
    """A colour square with a white mark at a place given by `index`: no two images tie exactly."""
    image = Image.new("RGB", (32, 32), COLORS[colour])
    image.paste((255, 255, 255), (3 * index, 0, 3 * index + 4, 4))
    return image


def _eval_sets(tmp_path) -> tuple[ZeroShotTask, list[str]]:
    """9 zero-shot images in 3 classes (5 + 4 per rank), and 3 shards of 4, 3 and 2 images with 1-3 captions each."""
    colours = list(COLORS)
    root = _folder(tmp_path / "zs", {c: [colours[(i + j) % 4] for j in range(3)] for i, c in enumerate(colours[:3])})
    urls = []
    for shard, size in enumerate((4, 3, 2)):
        samples = []
        for i in range(size):
            colour = colours[(shard + i) % 4]
            mark = f"mark {3 * shard + i}"  # no two captions tie exactly either
            captions = [f"a {colour} square, {mark}", f"{colour} {mark}", f"a square of {colour} {mark}"][: 1 + (shard + i) % 3]
            samples.append(Sample(f"{shard}{i:03d}", _marked(colour, 3 * shard + i), "\n".join(captions), {}))
        write_shards(str(tmp_path / "shards"), f"s{shard}", samples, samples_per_shard=10)
        urls.append(str(tmp_path / "shards" / f"s{shard}-00000.tar"))
    return ZeroShotTask(root=root, templates="generic"), urls


def _evaluate(model, spec: ZeroShotTask, urls: list[str], rank: int, world: int) -> dict:
    # one image per batch: features do not depend on batch partners, so near-ties of the random model break alike
    return {
        "zeroshot": replace(spec, batch_size=1).run(model, rank, world),
        "retrieval": RetrievalTask(urls, multi_caption=True, batch_size=1).run(model, rank, world),
        "pairs": RetrievalTask(urls, multi_caption=False, batch_size=1).run(model, rank, world),
    }


def _evaluate_share(rank: int, world: int, spec: ZeroShotTask, urls: list[str]) -> dict:
    return _evaluate(tiny_clip_model(), spec, urls, rank, world)


@pytest.mark.slow
def test_two_processes_evaluate_like_one(tmp_path):
    spec, urls = _eval_sets(tmp_path)
    expected = _evaluate(tiny_clip_model(), spec, urls, 0, 1)
    assert expected["retrieval"]["text_to_image_R@10"] == 1.0  # 9 images: every caption's image is in its top 10
    assert "loss" not in expected["retrieval"] and "loss" in expected["pairs"]
    assert {"image_to_text_median_rank", "text_to_image_mean_rank"} <= set(expected["retrieval"])  # compared below
    for got in on_gloo_ranks(_evaluate_share, WORLD, tmp_path, spec, urls):
        assert got["zeroshot"]["per_class"] == pytest.approx(expected["zeroshot"]["per_class"])
        for part in ("zeroshot", "retrieval", "pairs"):
            for name, value in expected[part].items():
                if name != "per_class":
                    assert math.isclose(got[part][name], value, rel_tol=1e-5, abs_tol=1e-6), (part, name)
