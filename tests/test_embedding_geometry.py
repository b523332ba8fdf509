"""docs/extending.md's worked example of a new evaluation task (alignment, uniformity, modality gap): composed from
the real config tree as the page runs it, checked against a direct computation on one process and on two
gloo ranks, and the page's blocks checked against the files they show."""

import os
import shlex

import pytest
import torch
from gloo import on_gloo_ranks
from helpers import COLORS, tiny_clip_model
from hydra.utils import instantiate
from PIL import Image
from readme_code import readme_section

from clip_train.config import check_keys
from clip_train.data.shard_writer import Sample, write_shards
from clip_train.eval.embedding_geometry import EmbeddingGeometryTask
from clip_train.eval.tasks import named_tasks, run_tasks
from clip_train.paths import CONFIG_DIR

SECTION = "## A new evaluation task"
SOURCE = os.path.join(os.path.dirname(__file__), "..", "clip_train", "eval", "embedding_geometry.py")


def _pairs(folder) -> tuple[list[Image.Image], list[str], str]:
    """7 distinct PNG pairs (lossless: the shards give back these pixels) in shards of 4 and 3; their brace pattern."""
    images, captions = [], []
    for index in range(7):
        colour = list(COLORS)[index % 4]
        image = Image.new("RGB", (32, 32), COLORS[colour])
        image.paste((255, 255, 255), (4 * index, 4 * index, 4 * index + 6, 4 * index + 6))
        images.append(image)
        captions.append(f"a {colour} square with a mark {'left' if index < 4 else 'right'}")
    samples = [Sample(f"{i:05d}", image, text, image_format="png") for i, (image, text) in enumerate(zip(images, captions))]
    write_shards(str(folder), "pairs", samples, samples_per_shard=4)
    return images, captions, str(folder / "pairs-{00000..00001}.tar")


def _direct(images: list[Image.Image], captions: list[str]) -> dict[str, float]:
    """The definitions, written out on the whole set: Wang & Isola's pdist form of uniformity."""
    model = tiny_clip_model()
    f, g = model.encode_image(images).double(), model.encode_text(captions).double()
    return {
        "alignment": float((f - g).norm(dim=1).pow(2).mean()),
        "image_uniformity": float(torch.pdist(f).pow(2).mul(-2).exp().mean().log()),
        "text_uniformity": float(torch.pdist(g).pow(2).mul(-2).exp().mean().log()),
        "modality_gap": float((f.mean(dim=0) - g.mean(dim=0)).norm()),
    }


def test_the_readme_task_from_the_config_tree_equals_the_definitions(compose_config, tmp_path):
    images, captions, pattern = _pairs(tmp_path)
    command = next(line for line in readme_section(SECTION).splitlines() if line.startswith("python -m clip_train.evaluate"))
    overrides = [word for word in shlex.split(command)[3:] if not word.startswith("checkpoint=")]
    assert overrides == ["+eval/task@eval.tasks.geometry=embedding_geometry"]
    cfg = compose_config(
        "checkpoint=run.ckpt", "eval=none", *overrides, f"eval.tasks.geometry.shards='{pattern}'", "eval.batch_size=3",
        config_name="evaluate",
    )  # fmt: skip
    check_keys(cfg)
    tasks = named_tasks(instantiate(cfg.eval.tasks, _convert_="partial"))
    metrics = run_tasks({"geometry": tasks["geometry"]}, tiny_clip_model(), 0, 1)
    expected = {f"geometry/{name}": value for name, value in _direct(images, captions).items()}
    assert metrics == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert -4 < metrics["geometry/image_uniformity"] < 0 and metrics["geometry/modality_gap"] > 0  # not degenerate


def _rank_metrics(rank: int, world: int, pattern: str) -> dict:
    return EmbeddingGeometryTask(shards=pattern, batch_size=2).run(tiny_clip_model(), rank, world)


@pytest.mark.slow
def test_two_ranks_sum_their_shares_like_one_process(tmp_path):
    images, captions, pattern = _pairs(tmp_path)  # rank 0 reads 4 pairs, rank 1 reads 3
    expected = _direct(images, captions)
    for got in on_gloo_ranks(_rank_metrics, 2, tmp_path, pattern):
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_the_readme_shows_the_files_as_they_are():
    section = readme_section(SECTION)
    with open(os.path.join(CONFIG_DIR, "eval", "task", "embedding_geometry.yaml")) as f:
        assert f"```yaml\n{f.read()}```" in section
    with open(SOURCE) as f:
        source = f.read()
    shown = section[section.index("```python\n") + len("```python\n") :]
    assert source.endswith(shown[: shown.index("```")])
