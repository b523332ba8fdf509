"""data.augment (OpenCLIP's --aug-cfg): off by default, when training crops exactly as before; each step, when on,
is applied (grayscale exactly and at its rate, colour jitter and RandAugment change the crop's pixels), and with
the pipeline's per-batch seed every step is reproducible."""

import random

import numpy as np
import pytest
import torch
from helpers import make_datamodule
from hydra.utils import instantiate

from clip_train.build import data_build_config
from clip_train.data.augmentation import train_transform
from clip_train.data.position import seeded_torch
from clip_train.data.transforms import train_crop

SIZE = 32


def _images(count: int = 64) -> list[torch.Tensor]:
    """Colourful (3, 40, 48) uint8 images: random blocks, so every step has something to change."""
    generator = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, 256, (count, 3, 5, 6), generator=generator, dtype=torch.uint8)
    return [block.repeat_interleave(8, 1).repeat_interleave(8, 2) for block in blocks]


def _apply(transform, images: list[torch.Tensor], seed: int = 7) -> torch.Tensor:
    with seeded_torch(seed):
        return torch.stack([transform(image) for image in images])


def _gray(batch: torch.Tensor) -> torch.Tensor:
    """(N,) whether each image's three channels are equal."""
    return (batch[:, 0] == batch[:, 1]).flatten(1).all(1) & (batch[:, 1] == batch[:, 2]).flatten(1).all(1)


def test_the_default_config_is_the_crop_alone(compose_config, colour_shards):
    cfg = compose_config("data=webdataset", f"data.train='{colour_shards}'", "data.num_workers=0")
    data_cfg = data_build_config(cfg)  # with the model's image size
    datamodule = instantiate(data_cfg)
    images = _images(8)
    expected = _apply(train_crop(data_cfg.image_size, data_cfg.crop_scale), images)
    assert torch.equal(_apply(datamodule.train_image_transform, images), expected)
    assert type(datamodule.train_image_transform) is type(train_crop(SIZE))


def test_grayscale_at_probability_one_and_at_its_rate():
    images = _images(400 // 8)
    always = _apply(train_transform(SIZE, (0.9, 1.0), {"gray_scale_prob": 1.0}), images)
    assert _gray(always).all()
    assert not _gray(_apply(train_crop(SIZE), images)).any()
    half = _gray(_apply(train_transform(SIZE, (0.9, 1.0), {"gray_scale_prob": 0.5}), images * 8)).float().mean()
    assert 0.4 < half < 0.6  # 400 draws: 5 standard deviations either side


@pytest.mark.parametrize(
    "augment",
    [
        {"color_jitter": [0.4, 0.4, 0.4, 0.1]},
        {"color_jitter": 0.4, "color_jitter_prob": 0.8},
        {"rand_augment": "rand-m9-mstd0.5"},
    ],
    ids=["jitter", "jitter_prob", "rand_augment"],
)
def test_a_step_changes_the_crops_pixels_and_repeats_under_the_same_seed(augment):
    images = _images(32)
    transform = train_transform(SIZE, (0.9, 1.0), augment)
    python_state, numpy_state = random.getstate(), np.random.get_state()[1].copy()
    first, again, other = _apply(transform, images), _apply(transform, images), _apply(transform, images, seed=8)
    assert random.getstate() == python_state and np.array_equal(np.random.get_state()[1], numpy_state)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    crops = _apply(train_crop(SIZE), images)  # the crop draws first, so it is the same box
    changed = (first.float() - crops.float()).abs().flatten(1).mean(1) > 1
    assert changed.float().mean() > 0.5


def test_a_training_batch_is_augmented(colour_shards):
    datamodule = make_datamodule(colour_shards, augment={"gray_scale_prob": 1.0})
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert _gray(batch["image"]).all()


def test_an_unknown_key_or_a_bad_value_is_named():
    with pytest.raises(ValueError, match="data.augment has no key 'grey_scale_prob'"):
        train_transform(SIZE, (0.9, 1.0), {"grey_scale_prob": 0.2})
    with pytest.raises(ValueError, match="data.augment.gray_scale_prob=2"):
        train_transform(SIZE, (0.9, 1.0), {"gray_scale_prob": 2})
    with pytest.raises(ValueError, match="data.augment.rand_augment='m9-mstd0.5'"):
        train_transform(SIZE, (0.9, 1.0), {"rand_augment": "m9-mstd0.5"})
