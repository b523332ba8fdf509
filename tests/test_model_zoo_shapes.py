"""The published shapes: each preset, built on the meta device with its published vocabulary (CLIP's 49,408
tokens, SigLIP's 32,000, XLM-R's 250,002), has the parameter counts of OpenCLIP's model table
(github.com/mlfoundations/open_clip docs/model_profile.csv: total, image tower, text tower, in millions)."""

import pytest
import torch
from hydra.utils import instantiate

# preset: (OpenCLIP model, total M, image M, text M), from OpenCLIP's docs/model_profile.csv; the SigLIP rows:
#   ViT-B-16-SigLIP-256,256,768,768,768,203.2,92.93,110.27,...
#   ViT-SO400M-14-SigLIP-384,384,768,1152,1152,877.96,428.23,449.73,...
#   xlm-roberta-base-ViT-B-32,224,768,512,512,366.12,87.85,278.27,...
PUBLISHED = {
    "vit_b32": ("ViT-B-32", 151.28, 87.85, 63.43),
    "vit_b32_clip": ("ViT-B-32-quickgelu", 151.28, 87.85, 63.43),
    "vit_b16": ("ViT-B-16", 149.62, 86.19, 63.43),
    "vit_b16_clip": ("ViT-B-16", 149.62, 86.19, 63.43),
    "vit_l14": ("ViT-L-14", 427.62, 303.97, 123.65),
    "vit_l14_336": ("ViT-L-14-336", 427.94, 304.29, 123.65),
    "vit_h14": ("ViT-H-14", 986.11, 632.08, 354.03),
    "convnext_b": ("convnext_base", 151.52, 88.09, 63.43),
    "siglip_b16_256": ("ViT-B-16-SigLIP-256", 203.2, 92.93, 110.27),
    "siglip_so400m_384": ("ViT-SO400M-14-SigLIP-384", 877.96, 428.23, 449.73),
    "xlm_roberta_b32": ("xlm-roberta-base-ViT-B-32", 366.12, 87.85, 278.27),
}
# the vocabulary each preset was published with (OpenCLIP's model configs: text_cfg.vocab_size, or the
# hf_tokenizer_name's); the presets take theirs from the tokenizer at start-up
VOCABULARY = {"siglip_b16_256": 32000, "siglip_so400m_384": 32000, "xlm_roberta_b32": 250002}
SIGLIP_LOSS = {"siglip_b16_256", "siglip_so400m_384"}  # their logit_bias comes with loss=siglip


def millions(module: torch.nn.Module) -> float:
    return round(sum(p.numel() for p in module.parameters()) / 1e6, 2)


@pytest.mark.parametrize("preset", sorted(PUBLISHED))
def test_preset_has_the_published_parameter_counts(compose_config, preset):
    cfg = compose_config(f"model={preset}", *(["loss=siglip"] if preset in SIGLIP_LOSS else []))
    with torch.device("meta"):
        model = instantiate(cfg.model, text_tower={"vocab_size": VOCABULARY.get(preset, 49408)})
    _, total, image, text = PUBLISHED[preset]
    assert (millions(model), millions(model.image_tower), millions(model.text_tower)) == (total, image, text)
    assert (model.logit_bias is not None) == (preset in SIGLIP_LOSS)


@pytest.mark.parametrize("preset", sorted(SIGLIP_LOSS))
def test_siglip_presets_are_bidirectional_pooled_last_with_the_published_bias(compose_config, preset):
    """SigLIP's text tower has no causal mask and pools position L - 1 whatever the mask says: a change in the
    last pad changes the embedding and the first token's state. Built at a tiny width: the preset's kind."""
    cfg = compose_config(
        f"model={preset}", "loss=siglip", "model.text_tower.width=16", "model.text_tower.layers=1",
        "model.text_tower.heads=2", "model.embed_dim=8", "model.context_length=6",
    )  # fmt: skip
    assert cfg.model.init_logit_bias == -10.0 and cfg.model.max_logit_scale is None
    tower = instantiate(cfg.model.text_tower, vocab_size=50).eval()
    ids = torch.tensor([[5, 6, 7, 1, 1, 1], [5, 6, 7, 1, 1, 2]])
    mask = torch.tensor([[1, 1, 1, 0, 0, 0]] * 2)
    with torch.no_grad():
        pooled, states = tower.forward_tokens(ids, mask)
    assert not torch.allclose(pooled[0], pooled[1])  # a mask-pooled (CLIP) tower ignores position 5
    assert not torch.allclose(states[0, 0], states[1, 0])  # a causal one hides position 5 from position 0
    torch.testing.assert_close(pooled, tower.projection(states[:, -1]))
    with pytest.raises(ValueError, match="pad every caption to the context length"):
        tower(ids[:, :4], mask[:, :4])
