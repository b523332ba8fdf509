"""Image decoding put off until a pair is used, so that a resumed worker skips batches without decoding them.

A resumed worker consumes the batches it delivered before the interruption without using them
(`clip_train.data.position.skip`). Their pairs must still pass through the same stages, in the same
order, for the batches after them to be the uninterrupted run's; but those stages (the shuffle buffer,
the neighbour pool) move pairs by count and caption only, never by pixels. So while a worker skips,
each sample's image header is read (PIL's `Image.open`: the format and size, no pixel data) and its
bytes are kept as `Undecoded`. `decoded_pairs`, the last stage before batching, decodes the ones that
reach a batch the worker yields (those the shuffle buffer still held when the skipping ended); the
ones in skipped batches are never decoded.

Bytes that are no image fail at the header and are dropped where the uninterrupted run drops them. A
sample whose header reads but whose pixel data does not decode is dropped later, where it is decoded
(or, in a skipped batch, not at all), so after one such sample the resumed stream is shifted from the
uninterrupted one; exact resumes already assume no bad samples (README, "Exact data resume").
"""

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from clip_train.data.bad_data import BadSampleCounter


@dataclass
class Deferral:
    """Whether pairs read now keep their image undecoded: true while a resumed worker skips batches."""

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
