"""Image transforms: a mild random resized crop for training, resize and centre crop for evaluation.

No horizontal flip: captions name left and right. Mean and std default to OpenAI CLIP's, the
usual choice for towers trained from scratch; match them to a pretrained trunk when using one.
"""

from collections.abc import Sequence

from torchvision import transforms as T

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def train_transform(
    image_size: int, mean: Sequence[float], std: Sequence[float], crop_scale: Sequence[float] = (0.9, 1.0)
) -> T.Compose:
    """PIL image -> (3, image_size, image_size) float tensor, normalised."""
    return T.Compose(
        [
            T.RandomResizedCrop(image_size, scale=tuple(crop_scale), interpolation=T.InterpolationMode.BICUBIC),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


def eval_transform(image_size: int, mean: Sequence[float], std: Sequence[float]) -> T.Compose:
    """PIL image -> (3, image_size, image_size): shorter side resized, then the centre cropped."""
    return T.Compose(
        [
            T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(image_size),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )
