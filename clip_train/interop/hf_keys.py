"""Weight names between a transformers `CLIPModel` and our `DualEncoder` on a timm CLIP-layout ViT.

    CLIPModel                                        DualEncoder
    vision_model.embeddings.class_embedding (W,)     image_tower.trunk.cls_token (1, 1, W)
    vision_model.embeddings.patch_embedding          image_tower.trunk.patch_embed.proj (no bias either side)
    vision_model.embeddings.position_embedding (N+1, W)   image_tower.trunk.pos_embed (1, N+1, W)
    vision_model.pre_layrnorm                        image_tower.trunk.norm_pre
    vision_model.encoder.layers.i.self_attn.{q,k,v}_proj   image_tower.trunk.blocks.i.attn.qkv (rows q, k, v)
    ... .self_attn.out_proj, layer_norm1, mlp.fc1, mlp.fc2, layer_norm2   ... .attn.proj, norm1, mlp.fc1, mlp.fc2, norm2
    vision_model.post_layernorm                      image_tower.trunk.norm
    visual_projection (D, W)                         image_tower.projection (D, W)
    text_model.*                                     text_tower.transformer.* (a CLIPTextModel)
    text_projection, logit_scale                     text_tower.projection, logit_scale

timm's `norm` runs on every token before the class token is taken, CLIP's `post_layernorm` on
the class token alone: a per-token LayerNorm, so the pooled features are the same.

And between a transformers `SiglipModel` and our `DualEncoder` on a timm SigLIP ViT + `SiglipTextTower`:

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
import transformers

Tensor = torch.Tensor

# transformers 5 dropped this level inside CLIPTextModel (CLIPModel keeps `text_model.` as its attribute)
TEXT_MODEL_LEVEL = "text_model." if int(transformers.__version__.split(".")[0]) < 5 else ""
# buffers older transformers saved with the weights; rebuilt from the config
NOT_WEIGHTS = ("vision_model.embeddings.position_ids", "text_model.embeddings.position_ids")


def _block_renames(depth: int) -> list[tuple[str, str]]:
    """(transformers name, timm name) inside the `depth` encoder layers, the same in CLIP's and SigLIP's ViT;
    q, k and v are not renamed but fused (`_fused_qkv`)."""
    parts = (("self_attn.out_proj", "attn.proj"), ("layer_norm1", "norm1"), ("layer_norm2", "norm2"),
             ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"))  # fmt: skip
    return [(f"encoder.layers.{i}.{theirs}.{kind}", f"blocks.{i}.{timm}.{kind}")
            for i, (theirs, timm), kind in itertools.product(range(depth), parts, ("weight", "bias"))]  # fmt: skip


def _fused_qkv(vision: dict[str, Tensor], depth: int, source: str) -> dict[str, Tensor]:
    """Pop the q, k, v projections (W, W) of each layer from `vision`; timm's fused qkv (3W, W), rows q, k, v."""
    fused = {}
    for i, kind in itertools.product(range(depth), ("weight", "bias")):
        parts = [take(vision, f"encoder.layers.{i}.self_attn.{p}_proj.{kind}", source) for p in "qkv"]
        fused[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(parts)
    return fused


def _split_qkv(trunk: dict[str, Tensor], depth: int) -> dict[str, Tensor]:
    """Inverse of `_fused_qkv`: pop timm's fused qkv from `trunk`; transformers' q, k, v projections."""
    split = {}
    for i, kind in itertools.product(range(depth), ("weight", "bias")):
        parts = take(trunk, f"blocks.{i}.attn.qkv.{kind}", "the image trunk").chunk(3)
        split |= {f"encoder.layers.{i}.self_attn.{p}_proj.{kind}": w for p, w in zip("qkv", parts, strict=True)}
    return split


def _clip_renamed(depth: int) -> list[tuple[str, str]]:
    """(CLIP vision name, timm name) of the weights that only change name."""
    pairs = [("embeddings.patch_embedding.weight", "patch_embed.proj.weight")]
    for clip_norm, timm_norm in (("pre_layrnorm", "norm_pre"), ("post_layernorm", "norm")):
        pairs += [(f"{clip_norm}.{kind}", f"{timm_norm}.{kind}") for kind in ("weight", "bias")]
    return pairs + _block_renames(depth)


def pop_prefixed(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Remove the entries under `prefix` from `state`; return them without it."""
    return {key.removeprefix(prefix): state.pop(key) for key in [key for key in state if key.startswith(prefix)]}


def take(state: dict[str, Tensor], key: str, source: str) -> Tensor:
    if key not in state:
        raise ValueError(f"{source} has no weight {key}")
    return state.pop(key)


def clip_to_ours(clip: dict[str, Tensor], depth: int, source: str) -> dict[str, Tensor]:
    """A `CLIPModel` state dict with `depth` vision layers -> our `DualEncoder` keys; a weight left over is an error."""
    clip = {key: value for key, value in clip.items() if key not in NOT_WEIGHTS}
    vision = pop_prefixed(clip, "vision_model.")
    trunk = {timm_name: take(vision, clip_name, source) for clip_name, timm_name in _clip_renamed(depth)}
    trunk["cls_token"] = take(vision, "embeddings.class_embedding", source).reshape(1, 1, -1)
    trunk["pos_embed"] = take(vision, "embeddings.position_embedding.weight", source).unsqueeze(0)
    trunk |= _fused_qkv(vision, depth, source)
    ours = {f"image_tower.trunk.{key}": value for key, value in trunk.items()}
    ours["image_tower.projection.weight"] = take(clip, "visual_projection.weight", source)
    ours["text_tower.projection.weight"] = take(clip, "text_projection.weight", source)
    ours["logit_scale"] = take(clip, "logit_scale", source).reshape(1)  # ours is (1,), which FSDP can shard
    ours |= {f"text_tower.transformer.{TEXT_MODEL_LEVEL}{key}": w for key, w in pop_prefixed(clip, "text_model.").items()}
    leftover = sorted(vision) + sorted(clip)
    if leftover:
        raise ValueError(f"{source} has weights a CLIP-layout ViT + CLIP text model do not: {leftover[:5]}")
    return ours


def trunk_to_clip_vision(trunk: dict[str, Tensor], depth: int) -> dict[str, Tensor]:
    """A timm CLIP-layout ViT trunk's state dict with `depth` blocks -> `CLIPVisionModel` keys (`vision_model.*`),
    which are also the vision part of a `CLIPModel`'s; a weight left over is an error."""
    trunk = dict(trunk)
    vision = {clip_name: take(trunk, timm_name, "the image trunk") for clip_name, timm_name in _clip_renamed(depth)}
    vision["embeddings.class_embedding"] = take(trunk, "cls_token", "the image trunk").reshape(-1)
    vision["embeddings.position_embedding.weight"] = take(trunk, "pos_embed", "the image trunk").squeeze(0)
    vision |= _split_qkv(trunk, depth)
    if trunk:
        raise ValueError(f"the image trunk has weights a CLIP vision model does not: {sorted(trunk)[:5]}")
    return {f"vision_model.{key}": value for key, value in vision.items()}


def ours_to_clip(ours: dict[str, Tensor], depth: int) -> dict[str, Tensor]:
    """Inverse of `clip_to_ours`: our `DualEncoder` state dict (either transformers version's text keys) -> `CLIPModel` keys."""
    ours = dict(ours)
    clip = trunk_to_clip_vision(pop_prefixed(ours, "image_tower.trunk."), depth)
    clip["visual_projection.weight"] = ours.pop("image_tower.projection.weight")
    clip["text_projection.weight"] = ours.pop("text_tower.projection.weight")
    clip["logit_scale"] = ours.pop("logit_scale").reshape(())  # transformers keeps it 0-d
    text = pop_prefixed(ours, "text_tower.transformer.")
    clip |= {f"text_model.{key.removeprefix('text_model.')}": weight for key, weight in text.items()}
    if ours:
        raise ValueError(f"weights a CLIPModel has no place for: {sorted(ours)[:5]}")
    return clip


HEAD = "head."
ATTN_POOL = "attn_pool."


def _siglip_renamed(depth: int) -> list[tuple[str, str]]:
    """(SigLIP vision name, timm name) of the weights that only change name."""
    pairs = [(f"embeddings.patch_embedding.{kind}", f"patch_embed.proj.{kind}") for kind in ("weight", "bias")]
    pairs += [(f"post_layernorm.{kind}", f"norm.{kind}") for kind in ("weight", "bias")]
    pairs += _block_renames(depth)
    pool_parts = (("attention.out_proj", "proj"), ("layernorm", "norm"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"))
    for (siglip_part, timm_part), kind in itertools.product(pool_parts, ("weight", "bias")):
        pairs.append((f"{HEAD}{siglip_part}.{kind}", f"{ATTN_POOL}{timm_part}.{kind}"))
    return pairs


def siglip_to_ours(siglip: dict[str, Tensor], depth: int, source: str) -> dict[str, Tensor]:
    """A `SiglipModel` state dict with `depth` vision layers -> our `DualEncoder` keys; a weight left over is an error."""
    siglip = dict(siglip)
    vision = pop_prefixed(siglip, "vision_model.")
    trunk = {timm_name: take(vision, siglip_name, source) for siglip_name, timm_name in _siglip_renamed(depth)}
    trunk["pos_embed"] = take(vision, "embeddings.position_embedding.weight", source).unsqueeze(0)
    trunk[f"{ATTN_POOL}latent"] = take(vision, f"{HEAD}probe", source)
    trunk |= _fused_qkv(vision, depth, source)
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
    vision = {siglip_name: take(trunk, timm_name, "the image trunk") for siglip_name, timm_name in _siglip_renamed(depth)}
    vision["embeddings.position_embedding.weight"] = take(trunk, "pos_embed", "the image trunk").squeeze(0)
    vision[f"{HEAD}probe"] = take(trunk, f"{ATTN_POOL}latent", "the image trunk")
    vision |= _split_qkv(trunk, depth)
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
