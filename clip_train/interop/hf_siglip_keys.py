"""Weight names between a transformers `SiglipModel` and our `DualEncoder` on a timm SigLIP ViT + `SiglipTextTower`.

    SiglipModel                                         DualEncoder
    vision_model.embeddings.patch_embedding (with bias) image_tower.trunk.patch_embed.proj
    vision_model.embeddings.position_embedding (N, W)   image_tower.trunk.pos_embed (1, N, W)  (no class token)
    vision_model.encoder.layers.i.self_attn.{q,k,v}_proj   image_tower.trunk.blocks.i.attn.qkv (rows q, k, v)
    ... .self_attn.out_proj, layer_norm1, mlp.fc1, mlp.fc2, layer_norm2   ... .attn.proj, norm1, mlp.fc1, mlp.fc2, norm2
    vision_model.post_layernorm                         image_tower.trunk.norm
    vision_model.head.probe (1, 1, W)                   image_tower.trunk.attn_pool.latent (1, 1, W)
    vision_model.head.attention.in_proj_* (3W, ...)     ...attn_pool.q (rows :W) and ...attn_pool.kv (rows W:, k then v)
    vision_model.head.attention.out_proj, layernorm, mlp   ...attn_pool.proj, norm, mlp
    text_model.head                                     text_tower.projection (Linear with bias)
    text_model.*                                        text_tower.transformer.* (a SiglipTextModel without its head)
    logit_scale (1,), logit_bias (1,)                   logit_scale, logit_bias

The image tower has no projection (its pooled features are the shared space), as SigLIP's.
"""

import itertools

import torch

from clip_train.interop.hf_clip_keys import TEXT_MODEL_LEVEL, pop_prefixed, take

Tensor = torch.Tensor
HEAD = "head."
ATTN_POOL = "attn_pool."


def _renamed(depth: int) -> list[tuple[str, str]]:
    """(SigLIP vision name, timm name) of the weights that only change name."""
    pairs = [(f"embeddings.patch_embedding.{kind}", f"patch_embed.proj.{kind}") for kind in ("weight", "bias")]
    pairs += [(f"post_layernorm.{kind}", f"norm.{kind}") for kind in ("weight", "bias")]
    layer_parts = (("self_attn.out_proj", "attn.proj"), ("layer_norm1", "norm1"), ("layer_norm2", "norm2"),
                   ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"))  # fmt: skip
    for i, (siglip_part, timm_part), kind in itertools.product(range(depth), layer_parts, ("weight", "bias")):
        pairs.append((f"encoder.layers.{i}.{siglip_part}.{kind}", f"blocks.{i}.{timm_part}.{kind}"))
    pool_parts = (("attention.out_proj", "proj"), ("layernorm", "norm"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"))
    for (siglip_part, timm_part), kind in itertools.product(pool_parts, ("weight", "bias")):
        pairs.append((f"{HEAD}{siglip_part}.{kind}", f"{ATTN_POOL}{timm_part}.{kind}"))
    return pairs


def siglip_to_ours(siglip: dict[str, Tensor], depth: int, source: str) -> dict[str, Tensor]:
    """A `SiglipModel` state dict with `depth` vision layers -> our `DualEncoder` keys; a weight left over is an error."""
    siglip = dict(siglip)
    vision = pop_prefixed(siglip, "vision_model.")
    trunk = {timm_name: take(vision, siglip_name, source) for siglip_name, timm_name in _renamed(depth)}
    trunk["pos_embed"] = take(vision, "embeddings.position_embedding.weight", source).unsqueeze(0)
    trunk[f"{ATTN_POOL}latent"] = take(vision, f"{HEAD}probe", source)
    for i in range(depth):
        for kind in ("weight", "bias"):
            parts = [take(vision, f"encoder.layers.{i}.self_attn.{p}_proj.{kind}", source) for p in "qkv"]
            trunk[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(parts)
    for kind in ("weight", "bias"):
        query, key_value = take(vision, f"{HEAD}attention.in_proj_{kind}", source).tensor_split([trunk["norm.weight"].numel()])
        trunk[f"{ATTN_POOL}q.{kind}"], trunk[f"{ATTN_POOL}kv.{kind}"] = query, key_value
    ours = {f"image_tower.trunk.{key}": value for key, value in trunk.items()}
    text = pop_prefixed(siglip, "text_model.")
    ours |= {f"text_tower.projection.{kind}": take(text, f"{HEAD}{kind}", source) for kind in ("weight", "bias")}
    ours |= {f"text_tower.transformer.{TEXT_MODEL_LEVEL}{key}": weight for key, weight in text.items()}
    ours |= {name: take(siglip, name, source).reshape(1) for name in ("logit_scale", "logit_bias")}
    leftover = sorted(vision) + sorted(siglip)
    if leftover:
        raise ValueError(f"{source} has weights a SigLIP ViT + SigLIP text model do not: {leftover[:5]}")
    return ours


def trunk_to_siglip_vision(trunk: dict[str, Tensor], depth: int) -> dict[str, Tensor]:
    """A timm SigLIP ViT trunk's state dict with `depth` blocks -> `SiglipVisionModel` keys (`vision_model.*`),
    which are also the vision part of a `SiglipModel`'s; a weight left over is an error."""
    trunk = dict(trunk)
    vision = {siglip_name: take(trunk, timm_name, "the image trunk") for siglip_name, timm_name in _renamed(depth)}
    vision["embeddings.position_embedding.weight"] = take(trunk, "pos_embed", "the image trunk").squeeze(0)
    vision[f"{HEAD}probe"] = take(trunk, f"{ATTN_POOL}latent", "the image trunk")
    for i in range(depth):
        for kind in ("weight", "bias"):
            q, k, v = take(trunk, f"blocks.{i}.attn.qkv.{kind}", "the image trunk").chunk(3)
            vision |= {f"encoder.layers.{i}.self_attn.{p}_proj.{kind}": w for p, w in zip("qkv", (q, k, v), strict=True)}
    for kind in ("weight", "bias"):
        parts = [take(trunk, f"{ATTN_POOL}{p}.{kind}", "the image trunk") for p in ("q", "kv")]
        vision[f"{HEAD}attention.in_proj_{kind}"] = torch.cat(parts)
    if trunk:
        raise ValueError(f"the image trunk has weights a SigLIP vision model does not: {sorted(trunk)[:5]}")
    return {f"vision_model.{key}": value for key, value in vision.items()}


def ours_to_siglip(ours: dict[str, Tensor], depth: int) -> dict[str, Tensor]:
    """Inverse of `siglip_to_ours`: our `DualEncoder` state dict -> `SiglipModel` keys."""
    ours = dict(ours)
    siglip = trunk_to_siglip_vision(pop_prefixed(ours, "image_tower.trunk."), depth)
    siglip |= {f"text_model.{HEAD}{kind}": ours.pop(f"text_tower.projection.{kind}") for kind in ("weight", "bias")}
    text = pop_prefixed(ours, "text_tower.transformer.")
    siglip |= {f"text_model.{key.removeprefix('text_model.')}": weight for key, weight in text.items()}
    siglip |= {name: ours.pop(name).reshape(1) for name in ("logit_scale", "logit_bias")}
    if ours:
        raise ValueError(f"weights a SiglipModel has no place for: {sorted(ours)[:5]}")
    return siglip
