"""Image decoding put off until a pair reaches a batch, so buffers hold bytes and skipped batches are never decoded.

In training every sample's image header is read when the sample is read (PIL's `Image.open`: the format
and size, no pixel data) and its bytes are kept as `Undecoded`: the shuffle buffer and the neighbour
pool move pairs by count and caption only, so they hold encoded bytes, not decoded images (OpenCLIP's
webdataset shuffle holds bytes too). `decoded_pairs`, the last stage before batching, decodes each
image. A resumed worker consumes the batches it delivered before the interruption without using
them (`clip_train.data.position.skip`): while it does (`Deferral.active`), nothing is decoded, so the
pairs of skipped batches never are.

Bytes that are no image fail at the header and are dropped and counted where they are read. A sample
whose header reads but whose pixel data does not decode is dropped and counted where it is decoded
(or, in a skipped batch, not at all), so after one such sample a resumed stream is shifted from the
uninterrupted one; exact resumes already assume no bad samples (docs/training.md, "Exact data resume").
"""

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from clip_train.data.bad_data import BadSampleCounter


@dataclass
class Deferral:
    """Whether the batches being formed are skipped (a resumed worker catching up), so their images stay undecoded."""

    active: bool = False


@dataclass(frozen=True)
class Undecoded:
    """Image bytes whose header PIL has read; url and where (url:key) name the sample if it fails to decode."""

    data: bytes
    url: str
    where: str

    @classmethod
    def checked(cls, data: bytes, url: str, where: str) -> "Undecoded":
        """Raises PIL's errors for bytes whose header is no image (`UnidentifiedImageError`) or is damaged."""
        Image.open(io.BytesIO(data))  # reads the header only
        return cls(data, url, where)


def image_or_none(decode: Callable[[bytes], Any], data: bytes, url: str, where: str, counter: BadSampleCounter) -> Any:
    """decode(data), or None with the sample counted as `not_image` or `corrupt_image` if it raises."""
    try:
        return decode(data)
    except UnidentifiedImageError:
        counter.skip("not_image", url, f"{where}: {len(data)} bytes starting {data[:16]!r} are no image")
    except Exception as error:  # PIL raises many types for truncated or damaged data, in open() or in decoding
        counter.skip("corrupt_image", url, f"{where} does not decode: {error.__class__.__name__}: {error}")
    return None


def decoded_pairs(
    pairs: Iterator[tuple], decode_image: Callable[[bytes], Any], counter: BadSampleCounter, deferral: Deferral
) -> Iterator[tuple]:
    """(image, caption, key) pairs with each `Undecoded` image decoded once `deferral` has ended (pairs that then
    fail are counted and dropped); while it is active, pairs pass as they are."""
    for image, caption, key in pairs:
        if isinstance(image, Undecoded) and not deferral.active:
            counter.decoded -= 1  # it was counted when its header was read; it is counted again if it decodes
            image = image_or_none(decode_image, image.data, image.url, image.where, counter)
            if image is None:
                continue
            counter.decoded += 1
        yield image, caption, key
