"""Where the shape lesson is lost: can the default image tower see shapes, and do trained embeddings hold them?

    python scripts/shape_diagnostics.py supervised [--steps 200]        # the tiny preset's image tower, trained
                                                                        # as a 5-way shape classifier
    python scripts/shape_diagnostics.py probe CHECKPOINT [CHECKPOINT ...] # linear probe on trained image embeddings
    python scripts/shape_diagnostics.py words CHECKPOINT [CHECKPOINT ...] # how far one word moves a caption's features

Both score the drawn zero-shot `shapes` set (single objects of a random colour, size, place and
background; chance 0.2), as `zeroshot/shapes/top1` does, with 100 images per shape.

`supervised` trains the `tiny` preset's image tower (timm's hybrid ViT-Ti/16 at 64 px) with a
linear head on the shape of the embedded training scenes that hold one group, through the training
crops and normalisation (batch 64, AdamW lr 5e-4, 50 warm-up steps): if it learns shapes, the
tower and the pixels are not what keeps a contrastive run from learning them.

`probe` fits a linear classifier (L-BFGS, 5-fold cross-validation) on a checkpoint's L2-normalised
image embeddings: what a zero-shot classifier could at best read from them. Near 0.2, the image
side holds no shape; well above while `zeroshot/shapes/top1` stays low, the text side is missing it.

`words` prints the cosine between the text features of a caption and of the same caption with its
shape, its colour or its place changed, for the checkpoint and for its architecture at random
init: a one-word change that barely moves the features gives the image tower nothing to learn from.
"""

import argparse
import os
import tempfile

import numpy as np
import torch
from hydra.utils import instantiate
from PIL import Image

import clip_train
from clip_train.data.device_normalize import normalize_images
from clip_train.data.transforms import CLIP_MEAN, CLIP_STD, eval_crop, train_crop
from clip_train.data.world.scenes import SHAPES, make_pair
from clip_train.eval.synthetic_sets import write_class_folders
from clip_train.model import ImageTower

PER_SHAPE = 100
BATCH = 64


def shape_set(cache_dir: str) -> tuple[list[Image.Image], torch.Tensor]:
    """The drawn zero-shot shapes set: (images, labels (N,) as indices into SHAPES)."""
    root = write_class_folders("shapes", cache_dir, per_class=PER_SHAPE)
    images, labels = [], []
    for label, shape in enumerate(SHAPES):
        for name in sorted(os.listdir(os.path.join(root, shape))):
            images.append(Image.open(os.path.join(root, shape, name)).convert("RGB"))
            labels.append(label)
    return images, torch.tensor(labels)


def uint8(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> (3, H, W) uint8, the layout of the training loader's images."""
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)


def one_group_scenes(count: int) -> list[tuple[torch.Tensor, int]]:
    """The first `count` embedded training scenes (seed 0) that hold a single group: (image, shape index)."""
    samples, index = [], 0
    while len(samples) < count:
        image, _, scene = make_pair(0, index, 64)
        index += 1
        if len(scene.groups) == 1:
            samples.append((uint8(image), SHAPES.index(scene.groups[0].shape)))
    return samples


def supervised(steps: int, cache_dir: str) -> float:
    torch.manual_seed(0)
    tower = ImageTower("vit_tiny_r_s16_p8_224", embed_dim=256, image_size=64, pool="token", patch_size=4)
    head = torch.nn.Linear(256, len(SHAPES))
    optimizer = torch.optim.AdamW([*tower.parameters(), *head.parameters()], lr=5e-4, weight_decay=0.1)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 50))
    crop, samples = train_crop(64), one_group_scenes(steps * BATCH)
    for step in range(steps):
        batch = samples[step * BATCH : (step + 1) * BATCH]
        pixels = normalize_images(torch.stack([crop(image) for image, _ in batch]), CLIP_MEAN, CLIP_STD)
        loss = torch.nn.functional.cross_entropy(head(tower(pixels)), torch.tensor([label for _, label in batch]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        warmup.step()
    images, labels = shape_set(cache_dir)
    tower.eval()
    with torch.no_grad():
        pixels = normalize_images(torch.stack([eval_crop(64)(uint8(image)) for image in images]), CLIP_MEAN, CLIP_STD)
        predictions = head(tower(pixels)).argmax(dim=1)
    return (predictions == labels).float().mean().item()


def fitted_probe_accuracy(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, test_labels: torch.Tensor):
    """A multinomial logistic regression (L2 penalty) fitted by L-BFGS on (N, D) unit-norm features; its test accuracy."""
    weights = torch.zeros(train.shape[1], len(SHAPES), requires_grad=True)
    bias = torch.zeros(len(SHAPES), requires_grad=True)
    optimizer = torch.optim.LBFGS([weights, bias], max_iter=200)

    def logits(x: torch.Tensor) -> torch.Tensor:
        return 10 * x @ weights + bias  # unit-norm features: a scale so the optimum lies at moderate weights

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits(train), train_labels) + 1e-3 * weights.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return (logits(test).argmax(dim=1) == test_labels).float().mean().item()


def probe(checkpoint: str, cache_dir: str) -> float:
    model = clip_train.load(checkpoint)
    images, labels = shape_set(cache_dir)
    features = model.encode_image(images).float()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    features, labels = features[order], labels[order]
    folds = torch.arange(len(labels)) % 5
    accuracies = [
        fitted_probe_accuracy(features[folds != k], labels[folds != k], features[folds == k], labels[folds == k])
        for k in range(5)
    ]
    return float(np.mean(accuracies))


CAPTION_AND_ONE_WORD_CHANGES = {
    "caption": "a small red circle on the left",
    "shape": "a small red square on the left",
    "colour": "a small blue circle on the left",
    "place": "a small red circle on the right",
}


def one_word_cosines(checkpoint: str) -> dict[str, dict[str, float]]:
    """{"trained" | "random init": {changed word kind: cosine with the caption's text features}}."""
    model = clip_train.load(checkpoint)
    captions = list(CAPTION_AND_ONE_WORD_CHANGES.values())
    cosines = {}
    for state in ("trained", "random init"):
        if state == "random init":
            torch.manual_seed(0)
            model.network.load_state_dict(instantiate(model.recipe.model).state_dict())
        features = model.encode_text(captions)
        kinds = list(CAPTION_AND_ONE_WORD_CHANGES)[1:]
        cosines[state] = {kind: round(float(features[0] @ features[i + 1]), 3) for i, kind in enumerate(kinds)}
    return cosines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("supervised", "probe", "words"))
    parser.add_argument("checkpoints", nargs="*")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache_dir:
        if args.what == "supervised":
            print(f"supervised shape accuracy after {args.steps} steps: {supervised(args.steps, cache_dir):.3f} (chance 0.2)")
        for checkpoint in args.checkpoints:
            if args.what == "probe":
                print(f"{checkpoint}: linear probe shape accuracy {probe(checkpoint, cache_dir):.3f} (chance 0.2)")
            else:
                print(f"{checkpoint}: cosine with {CAPTION_AND_ONE_WORD_CHANGES['caption']!r} after one word changes:")
                for state, cosines in one_word_cosines(checkpoint).items():
                    print(f"  {state}: " + ", ".join(f"{kind} {value}" for kind, value in cosines.items()))


if __name__ == "__main__":
    main()
