"""Winoground (Thrush et al., CVPR 2022): two images, two captions of the same words; match them.

Layout, as the dataset ships it on the Hugging Face hub (`facebook/winoground`, whose card says the
captions and tags are in `data/examples.jsonl` and the images in `data/images.zip`):

    ROOT/examples.jsonl   one JSON object a line: {"id": 0, "image_0": "ex_0_img_0", "image_1": "ex_0_img_1",
                          "caption_0": "...", "caption_1": "...", "tag": ..., "secondary_tag": ...,
                          "num_main_preds": ..., "collapsed_tag": ...}
    ROOT/images/ex_0_img_0.png ...   (images.zip unpacked)

`image_0`/`image_1` name a file of `images/` without its extension (`.png`); a name that has one is used as
it is. Caption_i belongs to image_i. With s(c, i) the cosine of caption c and image i, the paper's scores
(its section 3.2) are, per example:

- text: s(c0, i0) > s(c1, i0) and s(c1, i1) > s(c0, i1)   (each image prefers its own caption)
- image: s(c0, i0) > s(c0, i1) and s(c1, i1) > s(c1, i0)  (each caption prefers its own image)
- group: both.

Each is the share of examples that pass (chance 0.25, 0.25 and 1/6). Each rank scores every world-th
example and the counts are summed over ranks.
"""

import json
import os
from dataclasses import dataclass

import torch

from clip_train.distributed import all_reduce_sum
from clip_train.eval.image_features import image_features
from clip_train.inference import ClipModel

FIELDS = ("image_0", "image_1", "caption_0", "caption_1")


def read_examples(root: str) -> list[dict]:
    """The examples of ROOT/examples.jsonl in file order; a missing file or field raises naming the file and line."""
    path = os.path.join(root, "examples.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Winoground: {path} is missing (the dataset's data/examples.jsonl)")
    examples = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            example = json.loads(line)
            absent = [field for field in FIELDS if field not in example]
            if absent:
                raise ValueError(f"{path}, line {number}: no {', '.join(absent)}")
            examples.append(example)
    if not examples:
        raise ValueError(f"{path} holds no example")
    return examples


def image_path(root: str, name: str) -> str:
    return os.path.join(root, "images", name if os.path.splitext(name)[1] else f"{name}.png")


def winoground_scores(similarity: torch.Tensor) -> torch.Tensor:
    """similarity (N, 2, 2), [n, c, i] = s(caption c, image i) -> (3, N) bool: text, image and group correct."""
    s = similarity
    text = (s[:, 0, 0] > s[:, 1, 0]) & (s[:, 1, 1] > s[:, 0, 1])
    image = (s[:, 0, 0] > s[:, 0, 1]) & (s[:, 1, 1] > s[:, 1, 0])
    return torch.stack([text, image, text & image])


@dataclass(frozen=True)
class WinogroundTask:
    """Winoground (`eval.tasks.winoground`): root holds examples.jsonl and images/.
    batch_size, num_workers: the image loader's; progress: a progress bar on rank 0."""

    root: str | None = None
    batch_size: int = 128
    num_workers: int = 0
    progress: bool = False

    def __post_init__(self):
        if self.root is None:
            raise ValueError("winoground needs a root: the folder of examples.jsonl and images/")

    @torch.no_grad()
    def run(self, model: ClipModel, rank: int, world: int) -> dict[str, float]:
        """{text, image, group} over all ranks. Every rank must call this."""
        share = read_examples(self.root)[rank::world]
        paths = [image_path(self.root, example[f"image_{i}"]) for example in share for i in (0, 1)]
        images = image_features(
            model, paths, None, self.batch_size, self.num_workers, self.progress and rank == 0, "winoground"
        )
        captions = model.encode_text([example[f"caption_{c}"] for example in share for c in (0, 1)])
        images, captions = images.view(len(share), 2, images.shape[-1]), captions.view(len(share), 2, captions.shape[-1])
        similarity = torch.einsum("ncd,nid->nci", captions, images)
        counts = torch.zeros(4, dtype=torch.float64, device=model.device)
        counts[:3] = winoground_scores(similarity).double().sum(dim=1)
        counts[3] = len(share)
        *correct, examples = all_reduce_sum(counts).tolist()
        return dict(zip(("text", "image", "group"), (c / examples for c in correct)))
