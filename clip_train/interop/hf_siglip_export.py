"""Our dual encoder as a transformers `SiglipModel`, when it has SigLIP's layout.

A `SiglipModel` is one fixed pair: a ViT without class token (patch embedding with bias, no norm
before the blocks, plain pre-norm blocks, LayerNorm eps 1e-6 after them) pooled by one learnt
probe's attention ("map"), its pooled width the shared space (no projection); SigLIP's text
transformer (`SiglipTextTower`); and `logit_scale` with `logit_bias` (a run with `loss=siglip`).
`siglip_layout_differences` names what a model has otherwise. The processor is written by
`clip_train.interop.hf_processor`; its tokenizer gives no attention mask, since the text model
reads none (a mask passed to `SiglipModel` would hide the pads our tower attends to).
"""

import torch
from timm.layers import PatchEmbed
from timm.layers.attention_pool import AttentionPoolLatent
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from transformers import SiglipConfig, SiglipModel, SiglipVisionConfig

from clip_train.inference import ClipModel
from clip_train.interop.hf_siglip_keys import ours_to_siglip
from clip_train.interop.timm_tower import block_activation, plain_vit_blocks
from clip_train.model import SiglipTextTower

SIGLIP_ACTIVATIONS = {"gelu_pytorch_tanh", "gelu"}  # transformers' hidden_act names its vision model takes
LAYER_NORM_EPS = 1e-6  # SiglipVisionConfig's default, and timm's SigLIP ViTs'


def siglip_layout_differences(model: ClipModel) -> list[str]:
    """What keeps this dual encoder from being a `SiglipModel` (empty: nothing)."""
    dual_encoder = model.model
    tower = dual_encoder.image_tower
    requirements = {
        "SigLIP's text tower (model/text_tower=siglip_base)": isinstance(dual_encoder.text_tower, SiglipTextTower),
        "a logit_bias (loss=siglip)": dual_encoder.logit_bias is not None,
        "no image projection (model.image_tower.projection=none)": isinstance(getattr(tower, "projection", None), nn.Identity),
    }
    differences = [requirement for requirement, met in requirements.items() if not met]
    return differences + siglip_trunk_differences(getattr(tower, "trunk", None))


def siglip_trunk_differences(trunk: nn.Module | None) -> list[str]:
    """What keeps this image tower's trunk from being a `SiglipVisionModel` (empty: nothing)."""
    if not isinstance(trunk, VisionTransformer):
        return [f"a timm VisionTransformer image trunk (not {type(trunk).__name__})"]
    pool = trunk.attn_pool
    norms = [m for m in trunk.modules() if isinstance(m, nn.LayerNorm)]
    requirements = {
        "attention pooling by one probe (pool=map)": trunk.global_pool == "map" and type(pool) is AttentionPoolLatent
        and pool.latent_len == 1 and pool.pos_embed is None and isinstance(pool.q_norm, nn.Identity),
        "no class or register tokens": trunk.num_prefix_tokens == 0,
        "a convolutional patch embedding with bias": type(trunk.patch_embed) is PatchEmbed
        and trunk.patch_embed.proj.bias is not None and isinstance(trunk.patch_embed.norm, nn.Identity),
        "square patches": trunk.patch_embed.patch_size[0] == trunk.patch_embed.patch_size[1],
        "no norm before the blocks, one after them, no fc_norm": isinstance(trunk.norm_pre, nn.Identity)
        and isinstance(trunk.norm, nn.LayerNorm) and isinstance(trunk.fc_norm, nn.Identity),
        f"LayerNorm eps {LAYER_NORM_EPS} with bias": all(n.eps == LAYER_NORM_EPS and n.bias is not None for n in norms),
        "plain blocks (q/k/v bias, no q/k norm or layer scale, GELU)": plain_vit_blocks(trunk.blocks, SIGLIP_ACTIVATIONS),
        "one activation in all blocks": len({block_activation(block) for block in trunk.blocks}) == 1,
        "fixed image size": not trunk.dynamic_img_size,
    }  # fmt: skip
    return [requirement for requirement, met in requirements.items() if not met]


def siglip_vision_config(trunk: VisionTransformer, image_size: int) -> SiglipVisionConfig:
    """The `SiglipVisionConfig` of a SigLIP-layout timm ViT trunk (`siglip_trunk_differences` empty) at `image_size`."""
    return SiglipVisionConfig(
        hidden_size=trunk.embed_dim, intermediate_size=trunk.blocks[0].mlp.fc1.out_features,
        num_hidden_layers=len(trunk.blocks), num_attention_heads=trunk.blocks[0].attn.num_heads,
        image_size=image_size, patch_size=trunk.patch_embed.patch_size[0],
        hidden_act=block_activation(trunk.blocks[0]), layer_norm_eps=LAYER_NORM_EPS,
    )  # fmt: skip


def as_siglip_model(model: ClipModel) -> SiglipModel:
    """A `SiglipModel` holding `model`'s weights; ValueError naming what cannot be expressed."""
    differences = siglip_layout_differences(model)
    if differences:
        raise ValueError(f"the model is not in SigLIP's layout: it lacks {'; '.join(differences)}")
    dual_encoder = model.model
    trunk = dual_encoder.image_tower.trunk
    vision = siglip_vision_config(trunk, dual_encoder.image_size)
    text = dual_encoder.text_tower.transformer.config.to_dict()
    text |= {"pad_token_id": model.tokenizer.pad_token_id, "eos_token_id": model.tokenizer.eos_token_id}
    siglip = SiglipModel(SiglipConfig(text_config=text, vision_config=vision.to_dict()))
    weights = ours_to_siglip(dual_encoder.state_dict(), len(trunk.blocks))
    with torch.no_grad():
        siglip.load_state_dict(weights, strict=True)
    return siglip.eval()
