"""`export format=hf`: a folder transformers loads with `AutoModel` / `CLIPModel.from_pretrained` / `pipeline`.

    config.json, model.safetensors   a SiglipModel when the model has SigLIP's text tower (then its whole layout is
                                     required), a CLIPModel when the image trunk is a CLIP-layout ViT (both also
                                     pipeline("zero-shot-image-classification")), else a VisionTextDualEncoderModel
                                     over a TimmWrapperModel (any timm trunk)
    tokenizer files                  ours: AutoTokenizer gives our ids, truncating at the context length
    preprocessor_config.json         a CLIPImageProcessor doing our `eval_transform`

The transformers model is built and checked before anything is written: what it cannot express raises
ValueError naming the part, and it must give our embeddings on a random batch. Weight names are mapped in
`clip_train.interop.hf_keys`.

A `CLIPVisionModel` is one fixed ViT: class token (its position embedded), a bias-free convolutional patch
embedding, LayerNorm (eps 1e-5) before the blocks and after them, plain pre-norm blocks (q/k/v with bias, no q/k
norm, no layer scale, a GELU or QuickGELU MLP), class-token pooling, square images. A `SiglipModel` is one fixed
pair: a ViT without class token (patch embedding with bias, no norm before the blocks, LayerNorm eps 1e-6 after
them) pooled by one learnt probe's attention ("map") into the shared space (no projection), SigLIP's text
transformer, and `logit_scale` with `logit_bias`. The `*_layout_differences` functions name what a model has
otherwise.

The text side: our causal text tower is a `CLIPTextModel` already, and every layout projects the text model's
`pooler_output`, taken at the end-of-text token, the state our tower pools. A `PretrainedTextTower` pools by mean
or the first token, which no transformers model's `pooler_output` does (BERT's adds a dense layer and tanh), so
it has no export.
"""

import copy
import json
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed
from timm.layers.attention_pool import AttentionPoolLatent
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPTextConfig,
    CLIPVisionConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    SiglipConfig,
    SiglipModel,
    SiglipVisionConfig,
    TimmWrapperConfig,
    VisionTextDualEncoderConfig,
    VisionTextDualEncoderModel,
)
from transformers.image_utils import PILImageResampling

from clip_train.inference import ClipModel
from clip_train.interop.hf_keys import ours_to_clip, ours_to_siglip
from clip_train.interop.timm_tower import block_activation, plain_vit_blocks, state_with_image_projection, timm_image_tower
from clip_train.model import CausalTextTower, ImageTower, SiglipTextTower

TOLERANCE = 1e-4  # on unit vectors; float32 kernels in another order differ by ~1e-6


def as_transformers_model(model: ClipModel) -> PreTrainedModel:
    """A `SiglipModel` for SigLIP's layout, a `CLIPModel` where the image trunk allows, else a
    `VisionTextDualEncoderModel`, with `model`'s weights."""
    if isinstance(model.text_tower, SiglipTextTower):
        return as_siglip_model(model)
    if clip_layout_differences(timm_image_tower(model, "format=hf")):
        return as_dual_encoder_model(model)
    return as_clip_model(model)


def _features(output) -> torch.Tensor:
    """transformers 5 returns projected features as `pooler_output`, 4 as a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@torch.no_grad()
def check_same_features(model: ClipModel, exported: PreTrainedModel) -> None:
    """ValueError unless `exported` embeds a random batch and two captions as `model` does."""
    generator = torch.Generator().manual_seed(0)
    size = model.image_size
    pixels = torch.randn(2, 3, size, size, generator=generator).to(model.device)
    tokens = model.tokenize(["a photo of a cat", "two"])
    ids, mask = tokens["input_ids"].to(model.device), tokens["attention_mask"].to(model.device)
    exported = exported.to(model.device)
    text_inputs = {"input_ids": ids} if exported.config.model_type == "siglip" else {"input_ids": ids, "attention_mask": mask}
    pairs = {
        "image": (model.encode_pixels(pixels), _features(exported.get_image_features(pixel_values=pixels))),
        "text": (model.encode_tokens(ids, mask), _features(exported.get_text_features(**text_inputs))),
    }
    for side, (ours, theirs) in pairs.items():
        difference = (ours.float() - F.normalize(theirs.float(), dim=-1)).abs().max().item()
        if difference > TOLERANCE:
            raise ValueError(
                f"the exported {type(exported).__name__} would not reproduce our {side} embeddings "
                f"(max difference {difference:.2e} > {TOLERANCE}); nothing was written"
            )


def write_hf(model: ClipModel, out: str) -> None:
    """Write `model` to the folder `out` as a transformers model with its processor files."""
    exported = as_transformers_model(model)
    check_same_features(model, exported)
    os.makedirs(out, exist_ok=True)
    exported.save_pretrained(out)
    save_processor_files(model, out)


CLIP_ACTIVATIONS = {"quick_gelu", "gelu"}  # transformers' hidden_act names its vision model takes
CLIP_LAYER_NORM_EPS = 1e-5  # CLIPVisionConfig's default, and timm's CLIP ViTs'


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
        f"LayerNorm eps {CLIP_LAYER_NORM_EPS} with bias": all(n.eps == CLIP_LAYER_NORM_EPS and n.bias is not None
                                                             for n in norms),
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
        hidden_act=block_activation(trunk.blocks[0]), layer_norm_eps=CLIP_LAYER_NORM_EPS, **options,
    )  # fmt: skip


def as_clip_model(model: ClipModel) -> CLIPModel:
    """A `CLIPModel` holding `model`'s weights; ValueError naming what cannot be expressed."""
    differences = clip_layout_differences(model.image_tower)
    if differences:
        raise ValueError(f"the image tower is not a CLIP vision transformer: it lacks {'; '.join(differences)}")
    trunk = model.image_tower.trunk
    vision = clip_vision_config(trunk, model.image_size, projection_dim=model.embed_dim)
    config = CLIPConfig(
        text_config=clip_text_config(model).to_dict(), vision_config=vision.to_dict(),
        projection_dim=model.embed_dim, logit_scale_init_value=model.logit_scale.item(),
    )  # fmt: skip
    clip = CLIPModel(config)
    weights = ours_to_clip(state_with_image_projection(model), len(trunk.blocks))
    with torch.no_grad():
        clip.load_state_dict(weights, strict=True)
    return clip.eval()


SIGLIP_ACTIVATIONS = {"gelu_pytorch_tanh", "gelu"}  # transformers' hidden_act names its vision model takes
SIGLIP_LAYER_NORM_EPS = 1e-6  # SiglipVisionConfig's default, and timm's SigLIP ViTs'


def siglip_layout_differences(model: ClipModel) -> list[str]:
    """What keeps this dual encoder from being a `SiglipModel` (empty: nothing)."""
    tower = model.image_tower
    requirements = {
        "SigLIP's text tower (model/text_tower=siglip_base)": isinstance(model.text_tower, SiglipTextTower),
        "a logit_bias (loss=siglip)": model.logit_bias is not None,
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
        f"LayerNorm eps {SIGLIP_LAYER_NORM_EPS} with bias": all(n.eps == SIGLIP_LAYER_NORM_EPS and n.bias is not None
                                                               for n in norms),
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
        hidden_act=block_activation(trunk.blocks[0]), layer_norm_eps=SIGLIP_LAYER_NORM_EPS,
    )  # fmt: skip


def as_siglip_model(model: ClipModel) -> SiglipModel:
    """A `SiglipModel` holding `model`'s weights; ValueError naming what cannot be expressed. (Its processor's
    tokenizer gives no attention mask: the text model reads none, and a mask passed to `SiglipModel` would hide
    the pads our tower attends to.)"""
    differences = siglip_layout_differences(model)
    if differences:
        raise ValueError(f"the model is not in SigLIP's layout: it lacks {'; '.join(differences)}")
    trunk = model.image_tower.trunk
    vision = siglip_vision_config(trunk, model.image_size)
    text = model.text_tower.transformer.config.to_dict()
    text |= {"pad_token_id": model.tokenizer.pad_token_id, "eos_token_id": model.tokenizer.eos_token_id}
    siglip = SiglipModel(SiglipConfig(text_config=text, vision_config=vision.to_dict()))
    weights = ours_to_siglip(model.state_dict(), len(trunk.blocks))
    with torch.no_grad():
        siglip.load_state_dict(weights, strict=True)
    return siglip.eval()


OUR_PREFIX_TO_THEIRS = {
    "image_tower.trunk.": "vision_model.timm_model.",
    "image_tower.projection.": "visual_projection.",
    "text_tower.transformer.": "text_model.",  # both the installed CLIPTextModel's names
    "text_tower.projection.": "text_projection.",
    "logit_scale": "logit_scale",
}


def _timm_wrapper_config(model: ClipModel) -> TimmWrapperConfig:
    """`TimmWrapperModel` builds the trunk with `timm.create_model(architecture, num_classes=0, **model_args)` and
    pools with timm's own `forward_head`, keeping the trunk's `global_pool` (token, avg, map).
    `VisionTextDualEncoderModel` sizes its visual projection from the vision config's `hidden_size`, which a
    `TimmWrapperConfig` lacks: it is added as an extra field."""
    tower = model.image_tower
    arguments = {key: value for key, value in tower.timm_arguments.items() if key not in ("model_name", "num_classes")}
    try:
        json.dumps(arguments)
    except TypeError as error:
        raise ValueError(f"the image trunk's timm arguments {arguments} cannot be written to a config.json: {error}") from error
    return TimmWrapperConfig(
        architecture=tower.timm_arguments["model_name"], model_args=arguments, hidden_size=tower.trunk.num_features
    )


def as_dual_encoder_model(model: ClipModel) -> VisionTextDualEncoderModel:
    """A `VisionTextDualEncoderModel` holding `model`'s weights; ValueError naming what cannot be expressed."""
    config = VisionTextDualEncoderConfig.from_vision_text_configs(
        _timm_wrapper_config(model), clip_text_config(model),
        projection_dim=model.embed_dim, logit_scale_init_value=model.logit_scale.item(),
    )  # fmt: skip
    exported = VisionTextDualEncoderModel(config)
    ours = state_with_image_projection(model)
    weights, unplaced = {}, []
    for key, value in ours.items():
        prefix = next((prefix for prefix in OUR_PREFIX_TO_THEIRS if key.startswith(prefix)), None)
        if prefix is None:
            unplaced.append(key)
        else:
            value = value.reshape(()) if key == "logit_scale" else value  # transformers keeps it 0-d
            weights[OUR_PREFIX_TO_THEIRS[prefix] + key.removeprefix(prefix)] = value
    if unplaced:
        raise ValueError(f"weights a VisionTextDualEncoderModel has no place for: {unplaced[:5]}")
    with torch.no_grad():
        exported.load_state_dict(weights, strict=True)
    return exported.eval()


def clip_text_config(model: ClipModel) -> CLIPTextConfig:
    """The tower's `CLIPTextConfig`, pooling at the tokenizer's end-of-text id; ValueError if it cannot be one."""
    tower = model.text_tower
    if not isinstance(tower, CausalTextTower):
        raise ValueError(
            f"the text tower ({type(tower).__name__}, {getattr(tower, 'pooling', '?')} pooling) has no transformers "
            "form: CLIPModel and VisionTextDualEncoderModel project the text model's pooler_output, which is not "
            "that pooling; only a causal text tower (model/text_tower=causal_*) exports with format=hf"
        )
    tokenizer = model.tokenizer
    config = CLIPTextConfig.from_dict(tower.transformer.config.to_dict())
    config.eos_token_id = end_of_text_id(tokenizer)
    config.bos_token_id = tokenizer.bos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    return config


# transformers' CLIPTextModel reads an end-of-text id of 2 as "pool at the highest id" (old hub configs)
LEGACY_ARGMAX_ID = 2


def end_of_text_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id a `CLIPTextModel` must pool at to take the state our text tower pools (the last attended one).

    Raises ValueError when no id does: the tokenizer has no end-of-text token, does not end each
    text with it, or has it at id 2, which transformers would read as the argmax rule.
    """
    eos = tokenizer.eos_token_id
    if eos is None or tokenizer("a photo")["input_ids"][-1] != eos:
        raise ValueError(
            f"the text tower cannot be a CLIPTextModel: the tokenizer ({type(tokenizer).__name__}) does not end "
            "each text with an end-of-text token, where transformers pools"
        )
    if eos == LEGACY_ARGMAX_ID and eos != len(tokenizer) - 1:
        raise ValueError(
            "the text tower cannot be a CLIPTextModel: the tokenizer's end of text is id 2, which transformers "
            "reads as 'pool at the highest id' (a tokenizer learnt before end of text moved to the last id; retrain)"
        )
    return eos


def _declare_input_names(folder: str, names: list[str]) -> None:
    """Make the saved tokenizer in `folder` return only `names` (tokenizer_config.json's `model_input_names`,
    which `save_pretrained` does not write from the attribute)."""
    path = os.path.join(folder, "tokenizer_config.json")
    with open(path) as f:
        config = json.load(f)
    with open(path, "w") as f:
        json.dump(config | {"model_input_names": names}, f, indent=2)


def save_processor_files(model: ClipModel, out: str) -> None:
    """Write the tokenizer and `preprocessor_config.json` (a `CLIPImageProcessor`) into `out`."""
    tokenizer = copy.deepcopy(model.tokenizer)
    tokenizer.model_max_length = model.context_length  # truncation=True cuts where ours does
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(out)
    if isinstance(model.text_tower, SiglipTextTower):  # SigLIP's text model reads no mask: give none
        _declare_input_names(out, ["input_ids"])
    recipe = model.recipe
    image_processor(model.image_size, recipe.image_resize, recipe.image_mean, recipe.image_std).save_pretrained(out)


def image_processor(size: int, resize: str, mean: Sequence[float], std: Sequence[float]) -> CLIPImageProcessor:
    """A `CLIPImageProcessor` doing our `eval_transform(size, mean, std, resize)`: the shorter side resized bicubic
    to `size` and the centre cropped (`resize="shortest"`), or the whole image resized to the square ("squash")."""
    crop = resize == "shortest"
    return CLIPImageProcessor(
        do_resize=True, size={"shortest_edge": size} if crop else {"height": size, "width": size},
        resample=PILImageResampling.BICUBIC, do_center_crop=crop, crop_size={"height": size, "width": size},
        do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, image_mean=list(mean), image_std=list(std), do_convert_rgb=True,
    )  # fmt: skip
