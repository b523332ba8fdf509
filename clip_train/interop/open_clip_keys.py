"""Weight names between an OpenCLIP CLIP ViT (OpenAI's layout, which OpenCLIP keeps) and our `DualEncoder` on a
timm CLIP-layout ViT + `CausalTextTower`: the same tensors under other names.

    OpenCLIP                                     ours
    visual.conv1, .class_embedding (W,)          image_tower.trunk.patch_embed.proj, .cls_token (1, 1, W)
    visual.positional_embedding (N, W)           image_tower.trunk.pos_embed (1, N, W)
    visual.ln_pre, .ln_post                      image_tower.trunk.norm_pre, .norm
    visual.transformer.resblocks.i.*             image_tower.trunk.blocks.i.* (ln_1 norm1, attn.in_proj qkv, ...)
    visual.proj (W, E)                           image_tower.projection.weight (E, W)
    token_embedding, positional_embedding        text_tower.transformer.embeddings.{token,position}_embedding
    transformer.resblocks.i.attn.in_proj (3W, W) text_tower.transformer.encoder.layers.i.self_attn.{q,k,v}_proj
    transformer.resblocks.i.{ln_1, ln_2, mlp}    ...layers.i.{layer_norm1, layer_norm2, mlp.fc1/fc2}
    ln_final, text_projection (W, E)             ...final_layer_norm, text_tower.projection.weight (E, W)
"""

import torch

from clip_train.interop.hf_keys import TEXT_MODEL_LEVEL

TEXT = "text_tower.transformer." + TEXT_MODEL_LEVEL  # the installed transformers' CLIPTextModel names
TRUNK = "image_tower.trunk."

# (OpenCLIP, ours) module names inside one residual block; each holds a weight and a bias.
VISION_BLOCK = [("ln_1", "norm1"), ("attn.out_proj", "attn.proj"), ("ln_2", "norm2"),
                ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")]  # fmt: skip
TEXT_BLOCK = [("ln_1", "layer_norm1"), ("attn.out_proj", "self_attn.out_proj"), ("ln_2", "layer_norm2"),
              ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")]  # fmt: skip


def _vision_renames(layers: int) -> list[tuple[str, str]]:
    """(OpenCLIP name, our name) of the vision weights that only change name, both ways."""
    pairs = [(f"visual.{theirs}.{kind}", f"{TRUNK}{mine}.{kind}")
             for theirs, mine in [("ln_pre", "norm_pre"), ("ln_post", "norm")] for kind in ("weight", "bias")]  # fmt: skip
    for i in range(layers):
        block, theirs = f"{TRUNK}blocks.{i}.", f"visual.transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            pairs.append((f"{theirs}attn.in_proj_{kind}", f"{block}attn.qkv.{kind}"))
            pairs += [(f"{theirs}{their_name}.{kind}", f"{block}{my_name}.{kind}") for their_name, my_name in VISION_BLOCK]
    return pairs


def vision_to_ours(state: dict, layers: int) -> dict[str, torch.Tensor]:
    ours = {
        TRUNK + "patch_embed.proj.weight": state["visual.conv1.weight"],
        TRUNK + "cls_token": state["visual.class_embedding"].reshape(1, 1, -1),
        TRUNK + "pos_embed": state["visual.positional_embedding"].unsqueeze(0),
        "image_tower.projection.weight": state["visual.proj"].T,
    }
    return ours | {mine: state[theirs] for theirs, mine in _vision_renames(layers)}


def _text_renames(layers: int) -> list[tuple[str, str]]:
    """(OpenCLIP name, our name) of the text weights that only change name, both ways (q, k and v do not)."""
    pairs = [(f"ln_final.{kind}", f"{TEXT}final_layer_norm.{kind}") for kind in ("weight", "bias")]
    for i in range(layers):
        layer, theirs = f"{TEXT}encoder.layers.{i}.", f"transformer.resblocks.{i}."
        pairs += [(f"{theirs}{their_name}.{kind}", f"{layer}{my_name}.{kind}")
                  for their_name, my_name in TEXT_BLOCK for kind in ("weight", "bias")]  # fmt: skip
    return pairs


def text_to_ours(state: dict, layers: int) -> dict[str, torch.Tensor]:
    ours = {
        TEXT + "embeddings.token_embedding.weight": state["token_embedding.weight"],
        TEXT + "embeddings.position_embedding.weight": state["positional_embedding"],
        "text_tower.projection.weight": state["text_projection"].T,
    }
    for i in range(layers):
        layer, theirs = f"{TEXT}encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            for name, part in zip("qkv", state[f"{theirs}attn.in_proj_{kind}"].chunk(3)):
                ours[f"{layer}self_attn.{name}_proj.{kind}"] = part
    return ours | {mine: state[theirs] for theirs, mine in _text_renames(layers)}


def vision_to_open_clip(state: dict, layers: int) -> dict[str, torch.Tensor]:
    """Inverse of `vision_to_ours`."""
    theirs = {
        "visual.conv1.weight": state[TRUNK + "patch_embed.proj.weight"],
        "visual.class_embedding": state[TRUNK + "cls_token"].reshape(-1),
        "visual.positional_embedding": state[TRUNK + "pos_embed"].squeeze(0),
        "visual.proj": state["image_tower.projection.weight"].T,
    }
    return theirs | {their_name: state[mine] for their_name, mine in _vision_renames(layers)}


def text_to_open_clip(state: dict, layers: int) -> dict[str, torch.Tensor]:
    """Inverse of `text_to_ours`."""
    theirs = {
        "token_embedding.weight": state[TEXT + "embeddings.token_embedding.weight"],
        "positional_embedding": state[TEXT + "embeddings.position_embedding.weight"],
        "text_projection": state["text_tower.projection.weight"].T,
    }
    for i in range(layers):
        layer, their_layer = f"{TEXT}encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            parts = [state[f"{layer}self_attn.{name}_proj.{kind}"] for name in "qkv"]
            theirs[f"{their_layer}attn.in_proj_{kind}"] = torch.cat(parts)
    return theirs | {their_name: state[mine] for their_name, mine in _text_renames(layers)}
