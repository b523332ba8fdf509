"""One evaluation preprocessing: validation during training and `clip_train.evaluate` give the same numbers on the
same checkpoint and set, with large JPEGs (the ones the loader reduces on decode)."""

import json
import random

import numpy as np
import pytest
import torch
from helpers import colour_samples
from hydra import compose, initialize_config_dir
from PIL import Image

from clip_train.data.eval_preprocess import eval_pixels
from clip_train.data.image_decode import decode_rgb
from clip_train.data.shard_writer import Sample, encode_image, write_shards
from clip_train.data.transforms import CLIP_MEAN, CLIP_STD, eval_crop, min_decoded_side
from clip_train.evaluate import run as evaluate
from clip_train.paths import CONFIG_DIR
from clip_train.train import run

SIZES = [(1000, 800), (800, 1000), (2000, 1500)]


def _large_jpeg(index: int) -> Image.Image:
    """Noise over a colour gradient, one of `SIZES`: detail that resizing and DCT scaling treat differently."""
    width, height = SIZES[index % len(SIZES)]
    rng = np.random.default_rng(index)
    x, y = np.meshgrid(np.linspace(0, 1, width), np.linspace(0, 1, height))
    base = np.stack([x, y, (x + y) / 2], axis=-1) * 200
    pixels = np.clip(base + rng.normal(0, 40, (height, width, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def _large_samples(count: int) -> list[Sample]:
    rng = random.Random(0)
    words = ["red", "green", "blue", "noise", "gradient", "big", "small"]
    return [Sample(f"{i:09d}", _large_jpeg(i), f"a {rng.choice(words)} {rng.choice(words)} picture") for i in range(count)]


def test_eval_pixels_are_the_validation_loaders_pixels():
    image = _large_jpeg(0)
    data = encode_image(image, "jpg")
    loader = eval_crop(32)(decode_rgb(data, min_short_side=min_decoded_side(32, None)))  # what validation batches hold
    expected = (loader.float() / 255 - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)
    torch.testing.assert_close(eval_pixels(data, 32, CLIP_MEAN, CLIP_STD), expected, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_validation_and_evaluate_agree_on_large_jpegs(tmp_path):
    write_shards(str(tmp_path / "shards"), "train", colour_samples(40), samples_per_shard=10)
    write_shards(str(tmp_path / "shards"), "val", _large_samples(24), samples_per_shard=12)
    val = f"{tmp_path}/shards/val-{{00000..00001}}.tar"
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        run(compose("train", overrides=[
            f"paths.output_dir={tmp_path}/run", "data=webdataset", f"data.val_shards='{val}'",
            f"data.train_shards='{tmp_path}/shards/train-{{00000..00003}}.tar'", "data.batch_size=8", "data.num_workers=0",
            "model=test", "logger=[]",
            "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.check_val_every_n_epoch=null",
        ]))  # fmt: skip
        trained = json.loads((tmp_path / "run" / "metrics.json").read_text())
        (tmp_path / "evaluate").mkdir()
        evaluated = evaluate(compose("evaluate", overrides=[
            f"checkpoint={tmp_path}/run/checkpoints/last.ckpt", "eval=none", f"eval.tasks.retrieval.shards='{val}'",
            "eval.num_workers=0", "eval.progress=false", f"paths.output_dir={tmp_path}/evaluate",
        ]))  # fmt: skip
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2
    for name in ("loss", "image_to_text_R@1", "image_to_text_R@5", "text_to_image_R@1", "text_to_image_R@5"):
        assert evaluated[f"retrieval/{name}"] == pytest.approx(trained[f"val/{name}"], abs=1e-4), name
