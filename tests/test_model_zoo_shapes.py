"""The published shapes: each CLIP preset, built on the meta device with CLIP's 49,408-token vocabulary, has the
parameter counts of OpenCLIP's model table (docs/model_profile.csv: total, image tower, text tower, in millions)."""

import pytest
import torch
from hydra.utils import instantiate

# preset: (OpenCLIP model, total M, image M, text M), from OpenCLIP's docs/model_profile.csv
PUBLISHED = {
    "vit_b32": ("ViT-B-32", 151.28, 87.85, 63.43),
    "vit_b32_clip": ("ViT-B-32-quickgelu", 151.28, 87.85, 63.43),
    "vit_b16": ("ViT-B-16", 149.62, 86.19, 63.43),
    "vit_b16_clip": ("ViT-B-16", 149.62, 86.19, 63.43),
    "vit_l14": ("ViT-L-14", 427.62, 303.97, 123.65),
    "vit_l14_336": ("ViT-L-14-336", 427.94, 304.29, 123.65),
    "vit_h14": ("ViT-H-14", 986.11, 632.08, 354.03),
    "convnext_b": ("convnext_base", 151.52, 88.09, 63.43),
}


def millions(module: torch.nn.Module) -> float:
    return round(sum(p.numel() for p in module.parameters()) / 1e6, 2)


@pytest.mark.parametrize("preset", sorted(PUBLISHED))
def test_preset_has_the_published_parameter_counts(compose_config, preset):
    cfg = compose_config(f"model={preset}")
    with torch.device("meta"):
        model = instantiate(cfg.model, text_tower={"vocab_size": 49408})
    _, total, image, text = PUBLISHED[preset]
    assert (millions(model), millions(model.image_tower), millions(model.text_tower)) == (total, image, text)
