"""Does an image tower's output carry the number of objects? A linear probe on its tokens, for the VLM's count questions.

    python scripts/vlm_count_probe.py logs/clip_default/checkpoints/last.ckpt [--layers -1 -2 -4]

Draws the one-group scenes among the first `--scenes` of the VLM's scene stream (seed 1, as `python -m clip_train.vlm`
asks about), whose group has 1, 2 or 3 objects, reads the tower's tokens at each layer as the VLM does
(`clip_train.vlm.vision.ImageFeatures`: pre-norm, no class token; the class token apart), and fits a logistic
regression on the first two thirds to predict the count, scored on the last third. Prints, per layer, the held-out
accuracy from all patch tokens side by side (N × width features), from their mean, and from the class token,
beside the majority answer's share. When the tokens predict the count and the VLM does not (scripts/vlm_diagnose.py),
the VLM's connector and language model are what fail to read it.
"""

import argparse

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from clip_train.data.world.scenes import draw_scene
from clip_train.vlm.tower import TowerSource


def one_group_scenes(source: TowerSource, scenes: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """(pixels (M, 3, S, S), counts (M,)) of the one-group scenes among the first `scenes` of stream `seed`."""
    pixels, counts = [], []
    for index in range(scenes):
        image, scene, _ = draw_scene(seed, index, source.image_size)
        if len(scene.groups) == 1:
            pixels.append(source.preprocess(image))
            counts.append(scene.groups[0].count)
    return torch.stack(pixels), np.array(counts)


def probe(features: np.ndarray, counts: np.ndarray) -> float:
    """Held-out accuracy of a logistic regression on standardised `features`: fit on the first 2/3, scored on the rest."""
    features = (features - features.mean(0)) / (features.std(0) + 1e-6)
    cut = len(counts) * 2 // 3
    model = LogisticRegression(max_iter=2000, C=0.1).fit(features[:cut], counts[:cut])
    return model.score(features[cut:], counts[cut:])


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a clip_train checkpoint or export with a timm ViT image tower")
    parser.add_argument("--layers", nargs="+", type=int, default=[-1, -2, -4])
    parser.add_argument("--scenes", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    source = TowerSource.from_clip(args.checkpoint)
    trunk = source.tower.trunk.eval()
    pixels, counts = one_group_scenes(source, args.scenes, args.seed)
    majority = np.mean(counts[len(counts) * 2 // 3 :] == np.bincount(counts).argmax())
    print(f"{len(counts)} one-group scenes, counts 1/2/3: {np.bincount(counts)[1:].tolist()}; majority {majority:.3f}")
    print("| layer | all patch tokens | their mean | class token |\n| --- | --- | --- | --- |")
    for layer in args.layers:
        patches, prefixes = [], []
        for start in range(0, len(counts), 256):
            ((spatial, prefix),) = trunk.forward_intermediates(
                pixels[start : start + 256], indices=[layer], return_prefix_tokens=True, norm=False, output_fmt="NLC",
                intermediates_only=True, stop_early=True,
            )  # fmt: skip
            patches.append(spatial)
            prefixes.append(prefix[:, 0])
        patch, cls = torch.cat(patches), torch.cat(prefixes)
        scores = [probe(x.numpy(), counts) for x in (patch.flatten(1), patch.mean(1), cls)]
        print(f"| {layer} | " + " | ".join(f"{s:.3f}" for s in scores) + " |")


if __name__ == "__main__":
    main()
