"""A ClipModel stand-in whose embeddings are known exactly, for the benchmark tasks' tests: an image (or crop)
is embedded as its normalised mean RGB, a text as the normalised vector a table gives it. Similarities are
then cosines of 3-vectors a test can work out by hand."""

import io
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image


class TableModel:
    device = torch.device("cpu")
    embed_dim = 3

    def __init__(self, texts: Mapping[str, Sequence[float]]):
        self.texts = dict(texts)

    @staticmethod
    def preprocess(image: Image.Image) -> torch.Tensor:
        pixels = np.asarray(image.convert("RGB").resize((8, 8)), dtype=np.float32)  # one size, so batches stack
        return torch.from_numpy(pixels).permute(2, 0, 1)

    def preprocess_encoded(self, data: bytes) -> torch.Tensor:
        return self.preprocess(Image.open(io.BytesIO(data)))

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(pixels.mean(dim=(2, 3)), dim=-1)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        vectors = torch.tensor([self.texts[text] for text in texts], dtype=torch.float32).reshape(len(texts), 3)
        return torch.nn.functional.normalize(vectors, dim=-1)


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """The cosine of two vectors, written out: the reference the tests compare with."""
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (sum(x * x for x in a) ** 0.5 * sum(y * y for y in b) ** 0.5)
