"""SugarCrepe (Hsieh et al., NeurIPS 2023): does an image prefer its caption to a fluent hard negative?

Layout, as the benchmark ships it (github.com/RAIVNLab/sugar-crepe, `data/*.json` and `main_eval.py`):

    ROOT/add_att.json  add_obj.json  replace_att.json  replace_obj.json  replace_rel.json
         swap_att.json  swap_obj.json
    IMAGES/000000085329.jpg ...   (COCO val2017; `images`, default ROOT/val2017)

each JSON an object {"0": {"filename": "000000085329.jpg", "caption": "...", "negative_caption": "..."}, ...}
(keys need not be contiguous). An item is correct when the cosine of the image with its caption is
strictly higher than with the negative (a tie counts wrong, as `main_eval.py`'s `pos > neg`). Reports
each subset's accuracy (chance 0.5) and `mean`, their unweighted mean. Each rank scores every world-th
item of each subset and the counts are summed over ranks.
"""

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from clip_train.distributed import all_reduce_sum
from clip_train.eval.image_features import image_features
from clip_train.inference import ClipModel

SUBSETS = ("add_att", "add_obj", "replace_att", "replace_obj", "replace_rel", "swap_att", "swap_obj")
FIELDS = ("filename", "caption", "negative_caption")


def read_subset(path: str) -> list[dict]:
    """The items of one subset file, in file order; a missing file or field raises naming the file and item."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"SugarCrepe subset file {path} is missing (the benchmark's data/<subset>.json)")
    with open(path) as f:
        items = json.load(f)
    if not isinstance(items, dict):
        raise ValueError(f"{path}: expected a JSON object {{id: {{filename, caption, negative_caption}}}}")
    for key, item in items.items():
        absent = [field for field in FIELDS if field not in item]
        if absent:
            raise ValueError(f"{path}: item {key!r} has no {', '.join(absent)}")
    return list(items.values())


@dataclass(frozen=True)
class SugarCrepeTask:
    """SugarCrepe (`eval.tasks.sugarcrepe`).

    root: the folder of the subset JSONs; images: the COCO val2017 folder (None: ROOT/val2017).
    subsets: the subsets scored (all seven by default).
    batch_size, num_workers: the image loader's; progress: a progress bar on rank 0.
    """

    root: str | None = None
    images: str | None = None
    subsets: Sequence[str] = SUBSETS
    batch_size: int = 128
    num_workers: int = 0
    progress: bool = False

    def __post_init__(self):
        if self.root is None:
            raise ValueError("sugarcrepe needs a root: the folder of add_att.json ... swap_obj.json")
        bad = sorted(set(self.subsets) - set(SUBSETS))
        if bad:
            raise ValueError(f"sugarcrepe subsets: no subset {bad[0]!r}; there are {', '.join(SUBSETS)}")
        object.__setattr__(self, "subsets", tuple(self.subsets))

    @torch.no_grad()
    def run(self, model: ClipModel, rank: int, world: int) -> dict[str, float]:
        """{subset: accuracy, mean} over all ranks. Every rank must call this."""
        image_root = self.images or os.path.join(self.root, "val2017")
        counts = torch.zeros(2, len(self.subsets), dtype=torch.float64, device=model.device)
        for s, subset in enumerate(self.subsets):
            share = read_subset(os.path.join(self.root, f"{subset}.json"))[rank::world]
            paths = [os.path.join(image_root, item["filename"]) for item in share]
            images = image_features(
                model, paths, None, self.batch_size, self.num_workers, self.progress and rank == 0, f"sugarcrepe {subset}"
            )
            positives = model.encode_text([item["caption"] for item in share])
            negatives = model.encode_text([item["negative_caption"] for item in share])
            correct = (images * positives).sum(dim=-1) > (images * negatives).sum(dim=-1)
            counts[0, s] += correct.double().sum()
            counts[1, s] += len(share)
        correct, items = all_reduce_sum(counts)
        accuracies = {subset: float(correct[s] / items[s]) for s, subset in enumerate(self.subsets) if items[s] > 0}
        if accuracies:
            accuracies["mean"] = sum(accuracies.values()) / len(accuracies)
        return accuracies
