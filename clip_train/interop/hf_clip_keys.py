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
"""

import itertools

import torch
import transformers

Tensor = torch.Tensor

# transformers 5 dropped this level inside CLIPTextModel (CLIPModel keeps `text_model.` as its attribute)
TEXT_MODEL_LEVEL = "text_model." if int(transformers.__version__.split(".")[0]) < 5 else ""
# buffers older transformers saved with the weights; rebuilt from the config
NOT_WEIGHTS = ("vision_model.embeddings.position_ids", "text_model.embeddings.position_ids")


def _renamed(depth: int) -> list[tuple[str, str]]:
    """(CLIP vision name, timm name) of the weights that only change name."""
    pairs = [("embeddings.patch_embedding.weight", "patch_embed.proj.weight")]
    for clip_norm, timm_norm in (("pre_layrnorm", "norm_pre"), ("post_layernorm", "norm")):
        pairs += [(f"{clip_norm}.{kind}", f"{timm_norm}.{kind}") for kind in ("weight", "bias")]
    layer_parts = (("self_attn.out_proj", "attn.proj"), ("layer_norm1", "norm1"), ("layer_norm2", "norm2"),
                   ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"))  # fmt: skip
    for i, (clip_part, timm_part), kind in itertools.product(range(depth), layer_parts, ("weight", "bias")):
        pairs.append((f"encoder.layers.{i}.{clip_part}.{kind}", f"blocks.{i}.{timm_part}.{kind}"))
    return pairs


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
    trunk = {timm_name: take(vision, clip_name, source) for clip_name, timm_name in _renamed(depth)}
    trunk["cls_token"] = take(vision, "embeddings.class_embedding", source).reshape(1, 1, -1)
    trunk["pos_embed"] = take(vision, "embeddings.position_embedding.weight", source).unsqueeze(0)
    for i in range(depth):
        for kind in ("weight", "bias"):
            parts = [take(vision, f"encoder.layers.{i}.self_attn.{p}_proj.{kind}", source) for p in "qkv"]
            trunk[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(parts)
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
    vision = {clip_name: take(trunk, timm_name, "the image trunk") for clip_name, timm_name in _renamed(depth)}
    vision["embeddings.class_embedding"] = take(trunk, "cls_token", "the image trunk").reshape(-1)
    vision["embeddings.position_embedding.weight"] = take(trunk, "pos_embed", "the image trunk").squeeze(0)
    for i in range(depth):
        for kind in ("weight", "bias"):
            q, k, v = take(trunk, f"blocks.{i}.attn.qkv.{kind}", "the image trunk").chunk(3)
            vision |= {f"encoder.layers.{i}.self_attn.{p}_proj.{kind}": w for p, w in zip("qkv", (q, k, v), strict=True)}
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
