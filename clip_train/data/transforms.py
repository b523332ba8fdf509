"""Image transforms: a mild random resized crop for training, resize and centre crop for evaluation.

The data loader crops decoded uint8 tensors (`train_crop`, `eval_crop`: (3, h, w) uint8 ->
(3, S, S) uint8) and leaves normalisation to the device (`clip_train.data.device_normalize`), so
workers do no float work and batches cross to the device at a quarter of the bytes. Resizing is
bicubic with antialiasing, torch's native uint8 kernel, which follows PIL's bicubic filter: the
same interpolation as the PIL pipeline before it, and on this machine about as fast as bilinear
(channels-last uint8, about 0.2 ms per 224-px image), so nothing is gained by a softer kernel.

`eval_transform` (PIL image -> normalised float) is the preprocessing handed to users
(`clip_train.inference`) and mirrored by the exports (`clip_train.interop`).

No horizontal flip: captions name left and right. Mean and std default to OpenAI CLIP's, the
usual choice for towers trained from scratch; match them to a pretrained trunk when using one.
"""

import math
from collections.abc import Sequence

from torchvision import transforms as T
from torchvision.transforms import v2

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BICUBIC = v2.InterpolationMode.BICUBIC
# evaluation resizing, by OpenCLIP's names: shortest = shorter side to S, then the centre S×S (CLIP's);
# squash = the whole image to S×S, aspect ratio not kept, nothing cropped (SigLIP's)
RESIZE_MODES = ("shortest", "squash")


def _check_resize(resize: str) -> None:
    if resize not in RESIZE_MODES:
        raise ValueError(f"data.image_resize must be one of {RESIZE_MODES}, got {resize!r}")


def train_crop(image_size: int, crop_scale: Sequence[float] = (0.9, 1.0)) -> v2.RandomResizedCrop:
    """(3, h, w) uint8 -> (3, image_size, image_size) uint8: a random box of `crop_scale` of the area and
    aspect ratio 3/4 to 4/3, resized. Draws from torch's global generator (the pipeline seeds it per batch)."""
    return v2.RandomResizedCrop(image_size, scale=tuple(crop_scale), interpolation=BICUBIC, antialias=True)


def eval_crop(image_size: int, resize: str = "shortest") -> v2.Compose:
    """(3, h, w) uint8 -> (3, image_size, image_size) uint8: shorter side resized, then the centre cropped; or with
    `resize="squash"` the whole image resized to the square."""
    _check_resize(resize)
    if resize == "squash":
        return v2.Compose([v2.Resize((image_size, image_size), interpolation=BICUBIC, antialias=True)])
    return v2.Compose([v2.Resize(image_size, interpolation=BICUBIC, antialias=True), v2.CenterCrop(image_size)])


def min_decoded_side(image_size: int, crop_scale: Sequence[float] | None) -> int:
    """The shortest side a decoded image may be reduced to (`clip_train.data.image_decode`) so that every box the
    crop can take still spans ≥ image_size pixels each way, i.e. is never enlarged; `crop_scale` None: `eval_crop`.

    Any box of RandomResizedCrop has both sides ≥ scale_min × the image's shorter side: its area is at least
    scale_min × W × H while neither side exceeds the image's (its fallback box spans a whole side). One more
    pixel covers the rounding of the box's sides.
    """
    if crop_scale is None:
        return image_size
    return math.ceil((image_size + 1) / min(crop_scale))


def eval_transform(image_size: int, mean: Sequence[float], std: Sequence[float], resize: str = "shortest") -> T.Compose:
    """PIL image -> (3, image_size, image_size) float, normalised: shorter side resized, then the centre cropped; or
    with `resize="squash"` the whole image resized to the square."""
    _check_resize(resize)
    if resize == "squash":
        sizing = [T.Resize((image_size, image_size), interpolation=T.InterpolationMode.BICUBIC)]
    else:
        sizing = [T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(image_size)]
    return T.Compose([*sizing, T.ToTensor(), T.Normalize(mean, std)])
