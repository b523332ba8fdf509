"""Loader images: decoded per format to uint8, cropped on uint8 in the workers, normalised on the device.

The reference is the PIL pipeline (decode, convert("RGB"), crop and bicubic resize, ToTensor,
Normalize). Tolerances are in uint8 levels (1/255 before normalisation): torch's antialiased
uint8 bicubic follows PIL's filter but rounds its two passes a little differently, measured at
most 1 level for a given box (2 levels, rarely, on 224-px random boxes), averaging well under
0.01; a kernel, box or channel mix-up differs by tens of levels.
"""

import io

import numpy as np
import pytest
import torch
from helpers import make_datamodule
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from clip_train.data.bad_data import BadSampleCounter
from clip_train.data.device_normalize import normalize_images
from clip_train.data.image_decode import decode_rgb
from clip_train.data.pipeline import decode_pair
from clip_train.data.position import seeded_torch
from clip_train.data.shard_writer import Sample, write_shards
from clip_train.data.transforms import CLIP_MEAN, CLIP_STD, eval_crop, eval_transform, min_decoded_side, train_crop

STD = torch.tensor(CLIP_STD).view(3, 1, 1)


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth colour waves with grain: content on which a wrong box or kernel shows."""
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    waves = np.stack([np.sin(9 * x + seed) * 0.5 + 0.5, np.cos(7 * y) * 0.5 + 0.5, x * y], -1) * 200
    grain = np.random.default_rng(seed).normal(0, 25, (height, width, 3))
    return Image.fromarray((waves + grain).clip(0, 255).astype(np.uint8))


def encode(image: Image.Image, image_format: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **({"quality": 90} if image_format == "JPEG" else {}))
    return buffer.getvalue()


def pil_rgb(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def levels(normalised: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """|difference| of two normalised (3, H, W) images in uint8 levels."""
    return (normalised - reference).abs() * STD * 255


def test_modes_and_formats_decode_as_pil_converts_them():
    rgb = photo(40, 30)
    cases = {
        "grey JPEG": encode(rgb.convert("L")),
        "CMYK JPEG": encode(rgb.convert("CMYK")),
        "RGB JPEG": encode(rgb),
        "RGBA PNG": encode(rgb.convert("RGBA"), "PNG"),
        "palette PNG": encode(rgb.convert("P"), "PNG"),
        "grey PNG": encode(rgb.convert("L"), "PNG"),
        "RGBA WebP": encode(rgb.convert("RGBA"), "WEBP"),
    }
    for name, data in cases.items():
        expected = torch.from_numpy(np.array(pil_rgb(data))).permute(2, 0, 1)
        decoded = decode_rgb(data)
        assert decoded.dtype == torch.uint8 and decoded.shape == (3, 30, 40), name
        assert torch.equal(decoded, expected), name


def test_truncated_jpegs_are_corrupt_on_both_decode_paths_and_foreign_bytes_no_image():
    large = encode(photo(256, 256))
    samples = {
        "1": large[: len(large) // 2],  # small crop: torchvision's decoder
        "2": b"<html>403</html>",
        "3": large,
    }
    counter = BadSampleCounter()
    for key, data in samples.items():
        sample = {"__url__": "shard.tar", "__key__": key, "jpg": data, "txt": b"a caption"}
        assert (decode_pair(sample, counter) is None) == (key != "3")
    assert counter.counts[:2] == [1, 1] and counter.decoded == 1  # corrupt_image, not_image
    reduced = {"__url__": "shard.tar", "__key__": "4", "jpg": large[: len(large) // 2], "txt": b"cut"}
    assert decode_pair(reduced, counter, lambda data: decode_rgb(data, min_short_side=64)) is None  # PIL's draft
    assert counter.counts[0] == 2


def test_random_crop_equals_pil_reference_with_the_same_box():
    for width, height, size in [(96, 80, 64), (256, 256, 224), (300, 200, 64)]:
        data = encode(photo(width, height))
        image = pil_rgb(data)
        for seed in range(5):
            with seeded_torch(seed):
                ours = normalize_images(train_crop(size)(decode_rgb(data))[None], CLIP_MEAN, CLIP_STD)[0]
            with seeded_torch(seed):  # the same draws give the same box: v1's get_params is v2's algorithm
                top, left, h, w = T.RandomResizedCrop.get_params(image, (0.9, 1.0), (3 / 4, 4 / 3))
                crop = TF.resized_crop(image, top, left, h, w, [size, size], T.InterpolationMode.BICUBIC)
                reference = T.Normalize(CLIP_MEAN, CLIP_STD)(T.ToTensor()(crop))
            difference = levels(ours, reference)
            assert difference.max() <= 2.001 and difference.mean() < 0.05, (width, height, seed)


def test_reduced_decode_keeps_the_crop_geometry_and_enough_pixels():
    data = encode(photo(640, 480))
    full = decode_rgb(data)
    side = min_decoded_side(64, None)
    reduced = decode_rgb(data, min_short_side=side)
    assert reduced.shape == (3, 120, 160)  # 1/4: 1/8 would leave 60 < 64 pixels
    centred, from_full = eval_crop(64)(reduced).float(), eval_crop(64)(full).float()
    difference = (centred - from_full).abs().mean()
    assert difference < 4  # the same box: DCT scaling vs bicubic on grain; shifted by one pixel it is far more
    assert (centred[:, :, 1:] - from_full[:, :, :-1]).abs().mean() > 2 * difference
    for scale in [(0.9, 1.0), (0.5, 1.0), (0.08, 1.0)]:
        reduced = decode_rgb(data, min_short_side=min_decoded_side(64, scale))
        factor = full.shape[1] / reduced.shape[1]
        assert factor > 1 or scale[0] < 0.2  # reduced unless the crop may take a twelfth of the image
        relative = {"reduced": [], "full": []}  # box area / image area, over the same draws
        for seed in range(200):
            for name, image in (("reduced", reduced), ("full", full)):
                with seeded_torch(seed):
                    _, _, h, w = T.RandomResizedCrop.get_params(image, scale, (3 / 4, 4 / 3))
                relative[name].append(h * w / image[0].numel())
                assert name == "full" or min(h, w) >= 64
        # a draw near the border between fitting and not can flip with the rounding of the smaller image, so the
        # boxes are the same in distribution, not draw for draw
        assert abs(np.mean(relative["reduced"]) - np.mean(relative["full"])) < 0.01 + 0.03 * (scale[0] < 0.2), scale


@pytest.mark.parametrize("scale", [(0.9, 1.0), (0.3, 1.0), (0.08, 1.0)])
def test_no_box_is_smaller_than_the_output_on_an_image_reduced_to_the_min_side(scale):
    size = 64
    side = min_decoded_side(size, scale)
    crop = T.RandomResizedCrop(size, scale=scale)
    torch.manual_seed(0)
    for long_side in (side, side + 1, int(side * 1.4), side * 3):
        for width, height in [(side, long_side), (long_side, side)]:
            image = torch.zeros(3, height, width)
            boxes = [crop.get_params(image, scale, (3 / 4, 4 / 3)) for _ in range(300)]
            assert min(min(h, w) for _, _, h, w in boxes) >= size, (width, height)


def mixed_shard(folder) -> tuple[str, dict[str, bytes]]:
    """One shard of eight samples in every mode and format the loader meets; returns (its path, {key: image bytes})."""
    images = {
        "0": encode(photo(96, 64)),
        "1": encode(photo(64, 96, 1).convert("L")),
        "2": encode(photo(70, 70, 2).convert("CMYK")),
        "3": encode(photo(128, 100, 3).convert("RGBA"), "PNG"),
        "4": encode(photo(80, 90, 4), "WEBP"),
        "5": encode(photo(200, 160, 5)),  # reduced on decode (by 1/2 at 64 px)
        "6": encode(photo(48, 40, 6)),  # enlarged
        "7": encode(photo(64, 64, 7).convert("P"), "PNG"),
    }
    kinds = {"3": "png", "4": "webp", "7": "png"}
    samples = [Sample(key, data, f"picture {key}", image_format=kinds.get(key, "jpg")) for key, data in images.items()]
    write_shards(str(folder), "mixed", samples, samples_per_shard=100)
    return str(folder / "mixed-00000.tar"), images


def test_validation_batches_from_workers_are_uint8_and_normalise_to_the_pil_reference(tmp_path):
    shard, images = mixed_shard(tmp_path)
    datamodule = make_datamodule(shard, shard, batch_size=8, num_workers=1, image_size=64)
    datamodule.setup("validate")
    (batch,) = list(datamodule.val_dataloader())
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (8, 3, 64, 64)
    assert int(batch["bad_samples"].sum()) == 0
    normalised = datamodule.on_after_batch_transfer(batch, 0)["image"]
    assert normalised.dtype == torch.float32
    reference = eval_transform(64, CLIP_MEAN, CLIP_STD)
    for key, image in zip(batch["key"], normalised):
        difference = levels(image, reference(pil_rgb(images[key])))
        if key == "5":  # reduced on decode: libjpeg's DCT scaling, then a smaller resize, differ on the grain
            assert difference.mean() < 4, key
        else:
            assert difference.max() <= 1.001 and difference.mean() < 0.1, key


def test_training_batches_from_workers_are_uint8_and_whole_image_crops_match_pil(tmp_path):
    """crop_scale (1, 1) on square images leaves RandomResizedCrop one box, the whole image: an exact reference."""
    samples = [Sample(str(i), encode(photo(60, 60, i)), f"picture {i}") for i in range(8)]
    write_shards(str(tmp_path), "square", samples, samples_per_shard=4)
    shards = str(tmp_path / "square-{00000..00001}.tar")
    datamodule = make_datamodule(shards, batch_size=4, num_workers=2, image_size=32, crop_scale=(1.0, 1.0))
    datamodule.setup("fit")
    batches = list(datamodule.train_dataloader())
    assert [(b["image"].dtype, tuple(b["image"].shape)) for b in batches] == [(torch.uint8, (4, 3, 32, 32))] * 2
    for batch in batches:
        normalised = datamodule.on_after_batch_transfer(batch, 0)["image"]
        for key, image in zip(batch["key"], normalised):
            resized = pil_rgb(samples[int(key)].image).resize((32, 32), Image.Resampling.BICUBIC)
            difference = levels(image, T.Normalize(CLIP_MEAN, CLIP_STD)(T.ToTensor()(resized)))
            assert difference.max() <= 1.001 and difference.mean() < 0.05, key


def test_float_batches_pass_the_transfer_hook_untouched(colour_shards):
    datamodule = make_datamodule(colour_shards)
    batch = {"image": torch.randn(2, 3, 8, 8, dtype=torch.float64), "input_ids": torch.ones(2, 4, dtype=torch.long)}
    out = datamodule.on_after_batch_transfer(batch, 0)
    assert out["image"] is batch["image"] and out["input_ids"] is batch["input_ids"]


def test_normalisation_constants_are_made_once_per_device():
    """A step must not build its mean/std tensors anew: on CUDA that copy would wait for the queued work."""
    from clip_train.data.device_normalize import _channel_constants

    images = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    first = normalize_images(images, CLIP_MEAN, CLIP_STD)
    constants = _channel_constants(tuple(CLIP_MEAN), tuple(CLIP_STD), images.device)
    second = normalize_images(images, list(CLIP_MEAN), list(CLIP_STD))
    assert _channel_constants(tuple(CLIP_MEAN), tuple(CLIP_STD), images.device)[0] is constants[0]
    expected = (images.float() / 255 - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    assert torch.equal(first, second) and torch.allclose(first, expected)
