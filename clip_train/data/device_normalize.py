"""Normalisation of uint8 image batches on the device they were moved to, after the transfer.

The data workers send images as (B, 3, H, W) uint8: a quarter of the bytes of float32 through
the workers' shared memory, pinned memory and the host-to-device copy, and no float work on
the CPU cores that decode. The data module's `on_after_batch_transfer` turns them into the
normalised float32 the towers expect, where the arithmetic is nearly free (one fused
elementwise pass on the GPU). Batches whose images are already float (built by hand in tests)
pass untouched.
"""

import functools
from collections.abc import Sequence

import torch


@functools.cache
def _channel_constants(mean: tuple, std: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 3, 1, 1) mean and std on `device`, made once per device: a tensor built from Python numbers is a
    host-to-device copy, which on CUDA would wait for the queued work at every step."""
    return (
        torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1),
        torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1),
    )


def normalize_images(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(B, 3, H, W) uint8 in 0..255 -> (B, 3, H, W) float32, (images / 255 - mean) / std per channel, on the
    images' device; any other dtype is returned as it is."""
    if images.dtype != torch.uint8:
        return images
    mean_t, std_t = _channel_constants(tuple(mean), tuple(std), images.device)
    return (images.float() / 255 - mean_t) / std_t


def normalize_batch(batch: dict, mean: Sequence[float], std: Sequence[float]) -> dict:
    """The batch with its `image` normalised (`normalize_images`); every other entry as it is."""
    return {**batch, "image": normalize_images(batch["image"], mean, std)}
