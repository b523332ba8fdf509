"""What a training worker's shuffle buffer holds: encoded bytes (now) against decoded images (before).

    python scripts/benchmark_shuffle_memory.py [--buffer 2000] [--image-size 256] [--source-size 512] [--noise 24]

The training pipeline keeps each image encoded (`Undecoded`: bytes plus a header check) through the
shuffle buffer and decodes it just before batching (`clip_train.data.deferred_decode`); until this
change the buffer held the decoded (3, h, w) uint8 images, reduced on decode only as far as the
crop allows (`clip_train.data.transforms.min_decoded_side`). This script fills a buffer of
`--buffer` pairs both ways from the same JPEGs and reports the bytes each holds and the process
memory (RSS) each adds. The JPEGs are drawn scenes `--source-size` px wide with Gaussian noise of
`--noise` levels added, so they compress about as photos do (flat drawn colours would flatter the
encoded side); quality 90.
"""

import argparse
import io
import os

import numpy as np
from PIL import Image

from clip_train.data.image_decode import decode_rgb
from clip_train.data.transforms import min_decoded_side
from clip_train.data.world.scenes import make_pair


def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def photo_like_jpeg(index: int, source_size: int, noise: float) -> bytes:
    image, _, _ = make_pair(0, index, source_size)
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    pixels += np.random.default_rng(index).normal(0, noise, pixels.shape)
    data = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(data, format="JPEG", quality=90)
    return data.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--buffer", type=int, default=2000, help="data.shuffle_buffer")
    parser.add_argument("--image-size", type=int, default=256, help="the model's input size")
    parser.add_argument("--source-size", type=int, default=512, help="the JPEGs' width in pixels")
    parser.add_argument("--noise", type=float, default=24.0, help="Gaussian noise (uint8 levels) added before encoding")
    args = parser.parse_args()
    side = min_decoded_side(args.image_size, (0.9, 1.0))  # data.crop_scale's default
    jpegs = [photo_like_jpeg(i, args.source_size, args.noise) for i in range(args.buffer)]

    before = rss_bytes()
    encoded = [bytes(bytearray(data)) for data in jpegs]  # copies: what the buffer holds now (the header check keeps nothing)
    encoded_rss = rss_bytes() - before
    before = rss_bytes()
    decoded = [decode_rgb(data, min_short_side=side).contiguous() for data in jpegs]  # what it held before
    decoded_rss = rss_bytes() - before

    encoded_bytes = sum(len(data) for data in encoded)
    decoded_bytes = sum(image.numel() for image in decoded)
    shape = tuple(decoded[0].shape)
    print(f"{args.buffer} pairs of {args.source_size}-px JPEGs (quality 90), decoded for {args.image_size}-px crops to {shape}")
    print(f"  held as bytes (now):     {encoded_bytes / 2**20:8.1f} MiB of data, RSS +{encoded_rss / 2**20:8.1f} MiB")
    print(f"  held decoded (before):   {decoded_bytes / 2**20:8.1f} MiB of data, RSS +{decoded_rss / 2**20:8.1f} MiB")
    print(f"  ratio decoded / bytes:   {decoded_bytes / encoded_bytes:8.1f}x")


if __name__ == "__main__":
    main()
