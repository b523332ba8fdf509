"""The one evaluation preprocessing: encoded image bytes -> (3, S, S) normalised float32, exactly as validation
during training computes it.

Validation batches are decoded by `decode_rgb` (a large JPEG reduced on decode by libjpeg's DCT scaling while its
shorter side stays ≥ S), cropped by `eval_crop` (shorter side resized with torch's antialiased uint8 bicubic, then
the centre) and normalised on the device (`normalize_images`). Evaluation from a checkpoint
(`clip_train.evaluate`, the evaluation tasks' readers) runs the same three steps on the same bytes, so `val/*` and
`python -m clip_train.evaluate` agree on the same checkpoint and set; PIL's resize of the full-size decode differs
by several uint8 levels on large JPEGs. A PIL image handed to `ClipModel.encode_image` has no bytes left to reduce
and goes through `eval_transform` instead.
"""

from collections.abc import Sequence

import torch

from clip_train.data.device_normalize import normalize_images
from clip_train.data.image_decode import decode_rgb
from clip_train.data.transforms import eval_crop, min_decoded_side


def eval_pixels(
    data: bytes, image_size: int, mean: Sequence[float], std: Sequence[float], resize: str = "shortest"
) -> torch.Tensor:
    """Encoded image bytes -> (3, image_size, image_size) float32, resized by `resize` (`eval_crop`), normalised with
    `mean` and `std` (RGB, 0-1 scale). Raises what `decode_rgb` raises for bytes that are no image."""
    pixels = eval_crop(image_size, resize)(decode_rgb(data, min_short_side=min_decoded_side(image_size, None)))
    return normalize_images(pixels.unsqueeze(0), mean, std)[0]
