"""Image bytes -> (3, H, W) uint8 RGB tensor, decoded the cheapest correct way for its format.

    JPEG, shorter side < 2 × min_short_side   torchvision `decode_jpeg` (libjpeg-turbo straight into a
                                               tensor; no PIL image, no copy through NumPy)
    JPEG, shorter side ≥ 2 × min_short_side   PIL with `Image.draft`: libjpeg scales by 1/2, 1/4 or 1/8
                                               while decoding (DCT scaling), to the smallest size whose
                                               shorter side is still ≥ min_short_side
    PNG, WebP, anything else PIL opens        PIL

Every path gives what PIL's `.convert("RGB")` gives: grayscale copied into three channels, CMYK
and RGBA converted by PIL's rules (`decode_jpeg(mode=RGB)` equals PIL on grey, YCbCr and CMYK
JPEGs pixel for pixel). EXIF orientation is ignored, as PIL's decode ignores it. Errors are
PIL's: bytes that are no image raise `PIL.UnidentifiedImageError` (the header is always read by
`Image.open`), damaged or truncated data some other exception. A JPEG that torchvision refuses is
decoded by PIL instead, which accepts it or raises its own error, so a bad sample is classified
as it always was (`clip_train.data.bad_data`).

The result is a channels-last view (strides of an (H, W, 3) array), the layout in which
torch's uint8 antialiased resize is fastest; it is never written to.
"""

import io

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg


def decode_rgb(data: bytes, min_short_side: int = 0) -> torch.Tensor:
    """(3, H, W) uint8 RGB from encoded image bytes; a JPEG is reduced on decode while its shorter side
    stays ≥ `min_short_side` (0: never reduced)."""
    image = Image.open(io.BytesIO(data))  # reads the header only: the format and the size
    if image.format == "JPEG":
        if min_short_side > 0 and min(image.size) // min_short_side >= 2:
            image.draft("RGB", (min_short_side, min_short_side))  # PIL: largest 1/2^k keeping both sides ≥ this
        else:
            try:
                return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
            except RuntimeError:
                pass  # PIL decides: it decodes the JPEG after all, or raises the error it always raised
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
