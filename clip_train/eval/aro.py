"""ARO (Yuksekgonul et al., "When and why vision-language models behave like bags-of-words", ICLR 2023).

Layouts, as the ARO code reads them (github.com/mertyg/vision-language-models-are-bows,
`dataset_zoo/aro_datasets.py`, and the notebook `Replicate ARO! VG-Relation, VG-Attribution.ipynb`):

- `root` (VG-Relation and VG-Attribution): `visual_genome_relation.json` and `visual_genome_attribution.json`,
  each a JSON list of {"image_path": "<file in images/>", "bbox_x", "bbox_y", "bbox_w", "bbox_h",
  "true_caption", "false_caption"} plus "relation_name" (VG-Relation) or "attributes" ([two words],
  VG-Attribution); the images in `images/`. The image is cropped to the box (x, y, x + w, y + h).
- `coco_root`: `coco_karpathy_test.json`, a JSON list of {"image": "val2014/COCO_val2014_....jpg",
  "caption": [five captions]}, the image paths relative to coco_root.
- `flickr_root`: `flickr30k_test.json`, the same fields, images under `flickr30k-images/`.

Scores, as ARO computes them:

- VG-Relation: an item is correct when its image's cosine with the true caption is strictly higher than with
  the false one (ARO's argmax over [false, true] gives a tie to the false caption); accuracy per relation,
  macro-averaged over the relations outside the notebook's excluded list (`aro_excluded_relations.txt`).
- VG-Attribution: likewise per attribute pair ("a_b" of `attributes`), macro-averaged over the pairs with at
  least `min_attribute_count` items (ARO: 25).
- COCO and Flickr order: each test caption against its four order perturbations (`clip_train.eval.aro_order`,
  the published rules re-implemented); correct when the true caption scores at least as high as every
  perturbation (ARO's argmax gives a tie to the first option, the true caption); precision@1 over captions.

Reports `vg_relation`, `vg_attribution`, `coco_order`, `flickr_order` for the sets configured, and the
breakdowns `vg_relation_per_relation` and `vg_attribution_per_pair` ({name: accuracy}). Each rank scores
every world-th item (every world-th image for the order sets) and the counts are summed over ranks.
"""

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from clip_train.distributed import all_reduce_sum
from clip_train.eval.aro_order import Tagger, order_options, spacy_tagger
from clip_train.eval.image_features import image_features
from clip_train.inference import ClipModel

EXCLUDED_RELATIONS_FILE = os.path.join(os.path.dirname(__file__), "aro_excluded_relations.txt")
VG_FIELDS = ("image_path", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "true_caption", "false_caption")
ORDER_FILES = {"coco_order": "coco_karpathy_test.json", "flickr_order": "flickr30k_test.json"}


def excluded_relations() -> frozenset[str]:
    with open(EXCLUDED_RELATIONS_FILE) as f:
        return frozenset(line.strip() for line in f if line.strip() and not line.startswith("#"))


def _read_json_list(path: str, fields: tuple[str, ...], what: str) -> list[dict]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ARO {what}: {path} is missing")
    with open(path) as f:
        items = json.load(f)
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path}: expected a non-empty JSON list of items")
    for index, item in enumerate(items):
        absent = [field for field in fields if field not in item]
        if absent:
            raise ValueError(f"{path}: item {index} has no {', '.join(absent)}")
    return items


@dataclass(frozen=True)
class AroTask:
    """ARO (`eval.tasks.aro`): the sets whose folders are given (see the module docstring for each layout).

    root: the VG-Relation / VG-Attribution folder; coco_root, flickr_root: the order sets' folders (None: not run).
    pos_tagger: the spaCy pipeline name that tags nouns and adjectives for the order sets (ARO's en_core_web_sm),
        or a callable text -> [(token, Penn tag)].
    min_attribute_count: VG-Attribution's macro average counts the attribute pairs with at least this many items.
    max_words: captions of the order sets are cut to this many words (ARO: 30).
    batch_size, num_workers: the image loader's; progress: a progress bar on rank 0.
    """

    root: str | None = None
    coco_root: str | None = None
    flickr_root: str | None = None
    pos_tagger: str | Callable = "en_core_web_sm"
    min_attribute_count: int = 25
    max_words: int = 30
    batch_size: int = 128
    num_workers: int = 0
    progress: bool = False

    def __post_init__(self):
        if self.root is None and self.coco_root is None and self.flickr_root is None:
            raise ValueError("aro needs a root (VG-Relation/Attribution), a coco_root or a flickr_root")

    @torch.no_grad()
    def run(self, model: ClipModel, rank: int, world: int) -> dict:
        """{vg_relation, vg_attribution, coco_order, flickr_order} (the sets configured) and the VG breakdowns,
        over all ranks. Every rank must call this."""
        metrics = {}
        if self.root is not None:
            relations = self._vg_accuracies(model, "visual_genome_relation.json", "relation_name", rank, world)
            excluded = excluded_relations()
            kept = {name: acc for name, (acc, _) in relations.items() if name not in excluded}
            metrics |= {"vg_relation": _mean(kept), "vg_relation_per_relation": kept}
            pairs = self._vg_accuracies(model, "visual_genome_attribution.json", "attributes", rank, world)
            kept = {name: acc for name, (acc, count) in pairs.items() if count >= self.min_attribute_count}
            metrics |= {"vg_attribution": _mean(kept), "vg_attribution_per_pair": kept}
        tagger = None
        for name, folder in (("coco_order", self.coco_root), ("flickr_order", self.flickr_root)):
            if folder is not None:
                tagger = tagger or (spacy_tagger(self.pos_tagger) if isinstance(self.pos_tagger, str) else self.pos_tagger)
                metrics[name] = self._order_accuracy(model, folder, ORDER_FILES[name], tagger, rank, world)
        return metrics

    def _vg_accuracies(self, model: ClipModel, file: str, group_field: str, rank: int, world: int) -> dict:
        """{group name: (accuracy, items)} of one VG set over all ranks; group: the relation or the attribute pair."""
        items = _read_json_list(os.path.join(self.root, file), (*VG_FIELDS, group_field), file)
        groups = [item[group_field] if isinstance(item[group_field], str) else "_".join(item[group_field]) for item in items]
        names = sorted(set(groups))
        share = list(range(rank, len(items), world))
        paths = [os.path.join(self.root, "images", items[i]["image_path"]) for i in share]
        boxes = [_box(items[i]) for i in share]
        images = image_features(model, paths, boxes, self.batch_size, self.num_workers, self.progress and rank == 0, file)
        true = (images * model.encode_text([items[i]["true_caption"] for i in share])).sum(dim=-1)
        false = (images * model.encode_text([items[i]["false_caption"] for i in share])).sum(dim=-1)
        index = torch.tensor([names.index(groups[i]) for i in share], dtype=torch.long, device=model.device)
        counts = torch.zeros(2, len(names), dtype=torch.float64, device=model.device)
        counts[0].index_add_(0, index, (true > false).double())
        counts[1].index_add_(0, index, torch.ones_like(true, dtype=torch.float64))
        correct, totals = all_reduce_sum(counts)
        return {name: (float(correct[g] / totals[g]), int(totals[g])) for g, name in enumerate(names)}

    def _order_accuracy(self, model: ClipModel, folder: str, file: str, tagger: Tagger, rank: int, world: int) -> float:
        """Precision@1 of the true caption among its perturbations, over all ranks (this rank: images rank::world)."""
        annotation = _read_json_list(os.path.join(folder, file), ("image", "caption"), file)[rank::world]
        paths = [os.path.join(folder, entry["image"]) for entry in annotation]
        images = image_features(model, paths, None, self.batch_size, self.num_workers, self.progress and rank == 0, file)
        owners, options = [], []
        for i, entry in enumerate(annotation):
            for c, caption in enumerate(entry["caption"]):
                owners.append(i)
                options += order_options(caption, tagger, f"{entry['image']}/{c}", self.max_words)
        texts = model.encode_text(options).view(len(owners), 5, images.shape[-1])
        scores = torch.einsum("nkd,nd->nk", texts, images[owners])
        correct = float((scores[:, 0] >= scores[:, 1:].max(dim=-1).values).sum())
        counts = torch.tensor([correct, len(owners)], dtype=torch.float64, device=model.device)
        correct, captions = all_reduce_sum(counts).tolist()
        return correct / captions


def _box(item: dict) -> tuple[float, float, float, float]:
    x, y, w, h = (item[f"bbox_{k}"] for k in "xywh")
    return (x, y, x + w, y + h)


def _mean(accuracies: dict[str, float]) -> float:
    return sum(accuracies.values()) / len(accuracies) if accuracies else float("nan")
