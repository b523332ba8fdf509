"""The foreign formats hold our image tower as timm's model (its weights under timm's names, its
architecture as timm's arguments), so they take only a timm `ImageTower`; any other `Tower` exports
with `format=clip_train`."""

import torch
from timm.layers import Mlp
from timm.layers.activations import GELUTanh, QuickGELU
from timm.models.vision_transformer import Block
from torch import nn

from clip_train.inference import ClipModel
from clip_train.model import ImageTower

IMAGE_PROJECTION = "image_tower.projection.weight"


def timm_image_tower(model: ClipModel, format_name: str) -> ImageTower:
    """`model`'s image tower; ValueError naming the tower when it is not a timm `ImageTower`."""
    tower = model.image_tower
    if not isinstance(tower, ImageTower):
        raise ValueError(
            f"{format_name} holds the image tower as a timm model, and {type(tower).__name__} is not a timm "
            "ImageTower; export it with format=clip_train"
        )
    return tower


def state_with_image_projection(model: ClipModel) -> dict[str, torch.Tensor]:
    """The model's weights, an image tower without projection (`projection: none`, SigLIP's) given the identity
    matrix (embed_dim, embed_dim) it amounts to, for the formats whose models always project (CLIPModel's and
    VisionTextDualEncoderModel's `visual_projection`)."""
    state = model.state_dict()
    if isinstance(model.image_tower.projection, nn.Identity):
        state[IMAGE_PROJECTION] = torch.eye(model.embed_dim, device=model.device)
    return state


def block_activation(block: nn.Module) -> str | None:
    """transformers' `hidden_act` name of a timm ViT block's MLP activation (quick_gelu, gelu, gelu_pytorch_tanh);
    None for any other."""
    act = block.mlp.act
    if isinstance(act, QuickGELU):
        return "quick_gelu"
    if isinstance(act, GELUTanh) or (isinstance(act, nn.GELU) and act.approximate == "tanh"):
        return "gelu_pytorch_tanh"
    if isinstance(act, nn.GELU) and act.approximate == "none":
        return "gelu"
    return None


def plain_vit_blocks(blocks: nn.Module, activations: set[str]) -> bool:
    """Whether every timm ViT block is the plain pre-norm block transformers' CLIP and SigLIP vision models hold:
    q/k/v with bias, no q/k norm, no layer scale, an MLP with one of `activations` (`block_activation` names)."""
    return all(_plain_vit_block(block, activations) for block in blocks)


def _plain_vit_block(block: nn.Module, activations: set[str]) -> bool:
    attn = block.attn
    return (
        type(block) is Block and type(block.mlp) is Mlp and block_activation(block) in activations
        and attn.qkv.bias is not None
        and all(isinstance(m, nn.Identity) for m in (attn.q_norm, attn.k_norm, attn.norm, block.ls1, block.ls2, block.mlp.norm))
    )  # fmt: skip
