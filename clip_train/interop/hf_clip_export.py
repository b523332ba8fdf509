"""Our dual encoder as a transformers `CLIPModel`, when its image trunk is a timm CLIP-layout ViT.

A `CLIPVisionModel` is one fixed ViT: class token (its position embedded), a bias-free
convolutional patch embedding, LayerNorm before the blocks and after them, plain pre-norm
blocks (q/k/v with bias, no q/k norm, no layer scale, a GELU or QuickGELU MLP), LayerNorm eps
1e-5, class-token pooling, square images. `clip_layout_differences` names what a trunk has
otherwise; such a trunk exports as a `VisionTextDualEncoderModel` instead.
"""

import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig

from clip_train.inference import ClipModel
from clip_train.interop.hf_clip_keys import ours_to_clip
from clip_train.interop.hf_clip_text import clip_text_config
from clip_train.interop.timm_tower import block_activation, plain_vit_blocks, state_with_image_projection
from clip_train.model import ImageTower

CLIP_ACTIVATIONS = {"quick_gelu", "gelu"}  # transformers' hidden_act names its vision model takes
LAYER_NORM_EPS = 1e-5  # CLIPVisionConfig's default, and timm's CLIP ViTs'


def clip_layout_differences(tower: ImageTower) -> list[str]:
    """What keeps this image tower from being a `CLIPVisionModel` (empty: nothing)."""
    trunk = tower.trunk
    if not isinstance(trunk, VisionTransformer):
        return [f"{type(trunk).__name__} is not a timm VisionTransformer"]
    norms = [m for m in trunk.modules() if isinstance(m, nn.LayerNorm)]
    requirements = {
        "class-token pooling (pool=token)": trunk.global_pool == "token",
        "one class token, no register tokens, its position embedded": trunk.num_prefix_tokens == 1
        and trunk.cls_token is not None and not trunk.no_embed_class,
        "a bias-free convolutional patch embedding": type(trunk.patch_embed) is PatchEmbed
        and trunk.patch_embed.proj.bias is None and isinstance(trunk.patch_embed.norm, nn.Identity),
        "square patches": trunk.patch_embed.patch_size[0] == trunk.patch_embed.patch_size[1],
        "a LayerNorm before the blocks (norm_pre)": isinstance(trunk.norm_pre, nn.LayerNorm),
        "a LayerNorm after them, no fc_norm": isinstance(trunk.norm, nn.LayerNorm) and isinstance(trunk.fc_norm, nn.Identity),
        f"LayerNorm eps {LAYER_NORM_EPS} with bias": all(n.eps == LAYER_NORM_EPS and n.bias is not None for n in norms),
        "plain blocks (q/k/v bias, no q/k norm, no layer scale, (Quick)GELU)": plain_vit_blocks(trunk.blocks, CLIP_ACTIVATIONS),
        "one activation in all blocks": len({block_activation(block) for block in trunk.blocks}) == 1,
        "fixed image size": not trunk.dynamic_img_size,
    }  # fmt: skip
    return [requirement for requirement, met in requirements.items() if not met]


def clip_vision_config(trunk: VisionTransformer, image_size: int, **options) -> CLIPVisionConfig:
    """The `CLIPVisionConfig` of a CLIP-layout timm ViT trunk (`clip_layout_differences` empty) at `image_size`."""
    return CLIPVisionConfig(
        hidden_size=trunk.embed_dim, intermediate_size=trunk.blocks[0].mlp.fc1.out_features,
        num_hidden_layers=len(trunk.blocks), num_attention_heads=trunk.blocks[0].attn.num_heads,
        image_size=image_size, patch_size=trunk.patch_embed.patch_size[0],
        hidden_act=block_activation(trunk.blocks[0]), layer_norm_eps=LAYER_NORM_EPS, **options,
    )  # fmt: skip


def as_clip_model(model: ClipModel) -> CLIPModel:
    """A `CLIPModel` holding `model`'s weights; ValueError naming what cannot be expressed."""
    dual_encoder = model.model
    differences = clip_layout_differences(dual_encoder.image_tower)
    if differences:
        raise ValueError(f"the image tower is not a CLIP vision transformer: it lacks {'; '.join(differences)}")
    trunk = dual_encoder.image_tower.trunk
    vision = clip_vision_config(trunk, dual_encoder.image_size, projection_dim=dual_encoder.embed_dim)
    config = CLIPConfig(
        text_config=clip_text_config(model).to_dict(), vision_config=vision.to_dict(),
        projection_dim=dual_encoder.embed_dim, logit_scale_init_value=dual_encoder.logit_scale.item(),
    )  # fmt: skip
    clip = CLIPModel(config)
    weights = ours_to_clip(state_with_image_projection(dual_encoder), len(trunk.blocks))
    with torch.no_grad():
        clip.load_state_dict(weights, strict=True)
    return clip.eval()
