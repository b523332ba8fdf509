"""A brute-force image search index over a trained model's embeddings.

    index = clip_train.ImageTextIndex(clip_train.load("last.ckpt"))
    index.add(["a.jpg", "b.jpg", ...])                  # paths or PIL images, encoded in batches
    index.search_text("a red circle", k=5)              # [(path, cosine), ...], best first
    index.search_image("query.jpg", k=5)
    index.find_duplicates(threshold=0.95)               # [(path_a, path_b, cosine), ...]
    index.save("index/"); ImageTextIndex.load("index/", model)
    index.save_clip_retrieval("embeddings/")            # img_emb/img_emb_0.npy + metadata/metadata_0.parquet

Search is one (N, D) matrix product per query, done in chunks of rows; at D = 512 in float32,
100k images take 200 MB and a query about 10 ms on a CPU core. Past a few million images use an
approximate index (FAISS and the like) built from `index.embeddings`, or from the folder
`save_clip_retrieval` writes, which clip-retrieval's `index` and `back` commands read as their own.
"""

import json
import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from clip_train.inference import ClipModel


class ImageTextIndex:
    """Unit-norm image embeddings (N, D) on the CPU, with the path (or name) of each image."""

    def __init__(self, model: ClipModel, chunk_rows: int = 65536):
        self.model, self.chunk_rows = model, chunk_rows
        self.embeddings = torch.zeros(0, model.embed_dim)
        self.paths: list[str] = []

    def add(self, images: Sequence[Image.Image | str], names: Sequence[str] | None = None, batch_size: int = 64):
        """Encode and append images; PIL images need `names` (paths name themselves)."""
        if names is None:
            if not all(isinstance(image, str | os.PathLike) for image in images):
                raise ValueError("give `names` when adding PIL images")
            names = [str(image) for image in images]
        if len(names) != len(images):
            raise ValueError(f"{len(images)} images but {len(names)} names")
        features = self.model.encode_image(images, batch_size=batch_size).cpu()
        self.embeddings = torch.cat([self.embeddings, features])
        self.paths.extend(names)

    def _top(self, query: torch.Tensor, k: int) -> list[tuple[str, float]]:
        scores = torch.cat([chunk @ query for chunk in self.embeddings.split(self.chunk_rows)])
        values, indices = scores.topk(min(k, len(self.paths)))
        return [(self.paths[i], float(v)) for v, i in zip(values.tolist(), indices.tolist())]

    def search_text(self, query: str, k: int = 10) -> list[tuple[str, float]]:
        return self._top(self.model.encode_text([query])[0].cpu(), k)

    def search_image(self, query: Image.Image | str, k: int = 10) -> list[tuple[str, float]]:
        return self._top(self.model.encode_image([query])[0].cpu(), k)

    def find_duplicates(self, threshold: float = 0.95) -> list[tuple[str, str, float]]:
        """Pairs (i < j) whose cosine is at least `threshold`, most similar first."""
        pairs = []
        for start in range(0, len(self.paths), self.chunk_rows):
            block = self.embeddings[start : start + self.chunk_rows] @ self.embeddings.T
            rows, cols = torch.nonzero(block >= threshold, as_tuple=True)
            for row, col in zip((rows + start).tolist(), cols.tolist()):
                if row < col:
                    pairs.append((self.paths[row], self.paths[col], float(block[row - start, col])))
        return sorted(pairs, key=lambda pair: -pair[2])

    def save(self, folder: str) -> None:
        os.makedirs(folder, exist_ok=True)
        save_file({"embeddings": self.embeddings.contiguous()}, os.path.join(folder, "embeddings.safetensors"))
        with open(os.path.join(folder, "paths.json"), "w") as f:
            json.dump(self.paths, f)

    def save_clip_retrieval(self, folder: str, dtype: str = "float16") -> None:
        """Write the embeddings and paths as clip-retrieval's `inference` does, one partition:

            folder/img_emb/img_emb_0.npy          (N, D) unit-norm rows, row i the image paths[i]
            folder/metadata/metadata_0.parquet    one column, image_path

        float16 is clip-retrieval's own choice (half the size; cosines change by about 1e-3);
        `dtype="float32"` keeps the embeddings exact. Parquet needs pyarrow, which clip_train
        does not depend on (it is in the `dev` extra): without it this raises before writing.
        """
        if dtype not in ("float16", "float32"):
            raise ValueError(f"dtype={dtype!r}: clip-retrieval reads float16 or float32 embeddings")
        try:
            import pyarrow
            import pyarrow.parquet
        except ImportError as error:
            raise ImportError("clip-retrieval's metadata is a parquet file: pip install pyarrow") from error
        os.makedirs(os.path.join(folder, "img_emb"), exist_ok=True)
        os.makedirs(os.path.join(folder, "metadata"), exist_ok=True)
        np.save(os.path.join(folder, "img_emb", "img_emb_0.npy"), self.embeddings.numpy().astype(dtype))
        metadata = pyarrow.table({"image_path": pyarrow.array(self.paths, type=pyarrow.string())})
        pyarrow.parquet.write_table(metadata, os.path.join(folder, "metadata", "metadata_0.parquet"))

    @classmethod
    def load(cls, folder: str, model: ClipModel) -> "ImageTextIndex":
        index = cls(model)
        index.embeddings = load_file(os.path.join(folder, "embeddings.safetensors"))["embeddings"]
        with open(os.path.join(folder, "paths.json")) as f:
            index.paths = json.load(f)
        if len(index.paths) != index.embeddings.shape[0]:
            raise ValueError(f"{folder}: {len(index.paths)} paths for {index.embeddings.shape[0]} embeddings")
        return index
