"""Training augmentation beyond the crop, as OpenCLIP's `--aug-cfg`: colour jitter, grayscale, timm's RandAugment.

`data.augment` (all off by default, when training is the crop alone exactly as before):

    color_jitter       brightness, contrast, saturation[, hue] of torchvision's ColorJitter; one number x for
                       x, x, x (and no hue); null: none
    color_jitter_prob  the chance each image is jittered (OpenCLIP's color_jitter_prob)
    gray_scale_prob    the chance each image is made grayscale, kept as 3 channels (OpenCLIP's gray_scale_prob)
    rand_augment       a timm RandAugment string, e.g. "rand-m9-mstd0.5-inc1"; null: none

They run in the data workers on the cropped (3, S, S) uint8 image, in the order crop, RandAugment, colour
jitter, grayscale. Every draw comes from the generator the pipeline seeds per batch (`seeded_torch`), so a
resumed run sees the same augmented images: timm's RandAugment, which draws from Python's and NumPy's global
generators on a PIL image, is run with both seeded from a torch draw and put back after.
"""

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from timm.data.auto_augment import rand_augment_transform
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from clip_train.data.transforms import train_crop

RAND_AUGMENT_FILL = (124, 116, 104)  # the grey RandAugment fills uncovered pixels with: CLIP's mean in uint8


@dataclass(frozen=True)
class Augmentation:
    """`data.augment` (see the module docstring)."""

    color_jitter: float | Sequence[float] | None = None
    color_jitter_prob: float = 1.0
    gray_scale_prob: float = 0.0
    rand_augment: str | None = None

    def __post_init__(self):
        for name in ("color_jitter_prob", "gray_scale_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"data.augment.{name}={getattr(self, name)} is not a probability (0 to 1)")

    @classmethod
    def from_config(cls, augment: Mapping | None) -> "Augmentation":
        """From the `data.augment` mapping; a key it does not have is an error naming it and the accepted ones."""
        augment = dict(augment or {})
        known = {field.name for field in fields(cls)}
        unknown = sorted(augment.keys() - known)
        if unknown:
            raise ValueError(f"data.augment has no key {unknown[0]!r}: it takes {', '.join(sorted(known))}")
        return cls(**augment)

    @property
    def off(self) -> bool:
        return self.color_jitter is None and self.gray_scale_prob == 0 and self.rand_augment is None


class SeededRandAugment:
    """timm's RandAugment on a (3, H, W) uint8 tensor, its Python and NumPy draws seeded from torch's generator."""

    def __init__(self, config: str, image_size: int):
        hparams = {"translate_const": int(image_size * 0.45), "img_mean": RAND_AUGMENT_FILL}
        try:
            self.transform = rand_augment_transform(config, hparams)
        except (AssertionError, ValueError, KeyError) as error:
            raise ValueError(f"data.augment.rand_augment={config!r} is not a timm RandAugment string: {error}") from error

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        seed = int(torch.randint(0, 2**31 - 1, ()))
        python_state, numpy_state = random.getstate(), np.random.get_state()
        random.seed(seed)
        np.random.seed(seed)
        try:
            return F.pil_to_tensor(self.transform(F.to_pil_image(image)))
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def _jitter(color_jitter: float | Sequence[float]) -> v2.ColorJitter:
    values = [color_jitter] * 3 if isinstance(color_jitter, (int, float)) else list(color_jitter)
    if len(values) not in (3, 4):
        raise ValueError(f"data.augment.color_jitter={color_jitter} needs brightness, contrast, saturation[, hue]")
    return v2.ColorJitter(*values)


def train_transform(image_size: int, crop_scale: Sequence[float], augment: Mapping | None) -> Callable:
    """(3, h, w) uint8 -> (3, image_size, image_size) uint8: the training crop, then `augment`'s steps; the crop
    itself (`clip_train.data.transforms.train_crop`) when every step is off."""
    settings = Augmentation.from_config(augment)
    crop = train_crop(image_size, crop_scale)
    if settings.off:
        return crop
    steps = [crop]
    if settings.rand_augment is not None:
        steps.append(SeededRandAugment(settings.rand_augment, image_size))
    if settings.color_jitter is not None:
        steps.append(v2.RandomApply([_jitter(settings.color_jitter)], p=settings.color_jitter_prob))
    if settings.gray_scale_prob > 0:
        steps.append(v2.RandomGrayscale(p=settings.gray_scale_prob))
    return v2.Compose(steps)
