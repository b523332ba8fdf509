"""Image embeddings of a list of files, for the tasks that score images against their own captions.

Whole images go through `ClipModel.preprocess_encoded` (the bytes, exactly as validation preprocesses
them, like the zero-shot task); a crop (ARO's Visual Genome boxes) has no bytes of its own and goes
through `ClipModel.preprocess` after PIL's crop, as `ClipModel.encode_image` treats a PIL image.
"""

from collections.abc import Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm import tqdm

from clip_train.eval.readers import ImageFiles, loader
from clip_train.inference import ClipModel

Box = tuple[float, float, float, float]  # left, top, right, bottom in pixels (PIL's crop box)


class CroppedImages(Dataset):
    """Preprocessed crops: (path, box) -> pixels; an unreadable file stops evaluation with its path named."""

    def __init__(self, items: Sequence[tuple[str, Box]], preprocess):
        self.items, self.preprocess = list(items), preprocess

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> torch.Tensor:
        path, box = self.items[index]
        try:
            with Image.open(path) as image:
                return self.preprocess(image.convert("RGB").crop(box))
        except Exception as error:  # PIL raises many types for truncated or foreign data
            raise ValueError(f"cannot read the image {path} ({error.__class__.__name__}: {error})") from error


@torch.no_grad()
def image_features(
    model: ClipModel,
    paths: Sequence[str],
    boxes: Sequence[Box] | None = None,
    batch_size: int = 128,
    num_workers: int = 0,
    progress: bool = False,
    desc: str = "images",
) -> torch.Tensor:
    """(N, D) float32 unit-norm embeddings of `paths` in order (cropped to `boxes` when given), on the model's device."""
    dataset = (
        CroppedImages(list(zip(paths, boxes)), model.preprocess)
        if boxes is not None
        else ImageFiles(paths, model.preprocess_encoded)
    )
    features = [
        model.encode_pixels(pixels)
        for pixels in tqdm(loader(dataset, batch_size, num_workers), desc=desc, disable=not progress)
    ]
    return torch.cat(features) if features else torch.zeros(0, model.embed_dim, device=model.device)
