"""Linear probe: logistic regression on frozen image features, its L2 strength chosen on a validation split.

The procedure of CLIP_benchmark's linear probe (`clip_benchmark/metrics/linear_probe.py` and its `cli.py`,
read, not copied): unit-norm image features; a validation part carved at random from the training set
(`val_proportion`, CLIP_benchmark's `--val_proportion`, seeded); the weight decay searched on it
(`clip_train.eval.logistic_regression`); the final classifier fitted on training + validation with the chosen
value and scored on the test set. Reports `top1`, `top5` (with 5 classes or more), `mean_per_class_recall`
(the mean over test classes of the share of their images classified right) and the chosen `weight_decay`.

Input: two ImageFolders (one sub-folder of images per class, the same class folders in both), `train` and
`test`, or one `root` holding `train/` and `test/`.

Distributed: each rank encodes every world-th image of each split, the features are gathered
(`clip_train.distributed.gather_uneven`) and put back in file order, and every rank then runs the same fit on
the same features: a deterministic computation (float64 L-BFGS from zeros), so every rank returns the same
metrics without a further collective.
"""

import os
from dataclasses import dataclass

import torch

from clip_train.distributed import gather_uneven
from clip_train.eval.image_features import image_features
from clip_train.eval.logistic_regression import choose_weight_decay, fit, logits
from clip_train.eval.zeroshot import IMAGE_EXTENSIONS
from clip_train.inference import ClipModel


def class_folder_images(root: str, what: str) -> tuple[list[str], list[int], list[str]]:
    """(image paths, class indices, class folder names) of an ImageFolder, classes in sorted folder order."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"linear probe {what} folder {root!r} is not a folder")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not classes:
        raise ValueError(f"linear probe {what} folder {root!r} has no class folders")
    paths, labels = [], []
    for label, name in enumerate(classes):
        folder = os.path.join(root, name)
        images = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not images:
            raise ValueError(f"linear probe class folder {folder!r} holds no image ({', '.join(IMAGE_EXTENSIONS)})")
        paths += [os.path.join(folder, f) for f in images]
        labels += [label] * len(images)
    return paths, labels, classes


def validation_split(count: int, proportion: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(training indices, validation indices) of `count` items: a seeded random `proportion` for validation."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    held = max(1, round(proportion * count))
    return order[held:].sort().values, order[:held].sort().values


@dataclass(frozen=True)
class LinearProbeTask:
    """A linear probe (`eval.tasks.linear_probe`).

    root: a folder with train/ and test/ ImageFolders; or train and test, the two folders themselves.
    val_proportion: the share of the training images held out to choose the weight decay; seed: that split's.
    max_iter: L-BFGS iterations of each fit (the search's and the final one).
    batch_size, num_workers: the image loader's; progress: a progress bar on rank 0.
    """

    root: str | None = None
    train: str | None = None
    test: str | None = None
    val_proportion: float = 0.2
    seed: int = 0
    max_iter: int = 500
    batch_size: int = 128
    num_workers: int = 0
    progress: bool = False

    def __post_init__(self):
        if (self.root is None) == (self.train is None or self.test is None):
            raise ValueError("linear_probe needs a root with train/ and test/, or both train and test (not both forms)")
        if not 0 < self.val_proportion < 1:
            raise ValueError(f"linear_probe val_proportion must be in (0, 1), not {self.val_proportion}")

    def folders(self) -> tuple[str, str]:
        if self.root is not None:
            return os.path.join(self.root, "train"), os.path.join(self.root, "test")
        return self.train, self.test

    def _features(self, model: ClipModel, paths: list[str], rank: int, world: int, what: str) -> torch.Tensor:
        """(N, D) features of all `paths` in order on every rank; this rank encodes paths rank::world."""
        share = image_features(
            model, paths[rank::world], None, self.batch_size, self.num_workers, self.progress and rank == 0, what
        )
        features, _ = gather_uneven(share)
        indices, _ = gather_uneven(torch.arange(rank, len(paths), world, device=share.device))
        return features[indices.argsort()]

    @torch.no_grad()
    def run(self, model: ClipModel, rank: int, world: int) -> dict[str, float]:
        """{top1, [top5], mean_per_class_recall, weight_decay}, the same on every rank. Every rank must call this."""
        train_folder, test_folder = self.folders()
        train_paths, train_labels, classes = class_folder_images(train_folder, "train")
        test_paths, test_labels, test_classes = class_folder_images(test_folder, "test")
        if test_classes != classes:
            raise ValueError(f"linear probe: the class folders of {test_folder} differ from those of {train_folder}")
        train_x = self._features(model, train_paths, rank, world, "linear probe train")
        test_x = self._features(model, test_paths, rank, world, "linear probe test")
        train_y = torch.tensor(train_labels, device=train_x.device)
        test_y = torch.tensor(test_labels, device=test_x.device)
        fitted, held = validation_split(len(train_y), self.val_proportion, self.seed)
        fitted, held = fitted.to(train_x.device), held.to(train_x.device)
        if len(fitted) == 0:
            raise ValueError(f"linear probe: {train_folder} has too few images to hold out a validation part")
        validation = (train_x[held], train_y[held])
        weight_decay, _ = choose_weight_decay((train_x[fitted], train_y[fitted]), validation, len(classes), self.max_iter)
        weights = fit(train_x, train_y, len(classes), weight_decay, self.max_iter)
        return classification_metrics(logits(weights, test_x), test_y) | {"weight_decay": weight_decay}


def classification_metrics(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """scores (N, C), labels (N,) -> top1, top5 (when C >= 5) and mean_per_class_recall over the classes present."""
    ranked = scores.topk(min(5, scores.shape[1]), dim=-1).indices
    hit1 = (ranked[:, 0] == labels).double()
    metrics = {"top1": float(hit1.mean())}
    if scores.shape[1] >= 5:
        metrics["top5"] = float((ranked == labels[:, None]).any(dim=-1).double().mean())
    present = labels.unique()
    metrics["mean_per_class_recall"] = float(torch.stack([hit1[labels == c].mean() for c in present]).mean())
    return metrics
