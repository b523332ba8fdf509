"""The image tower: any timm backbone, pooled, then linearly projected into the shared space (a `Tower`)."""

from collections.abc import Sequence

import timm
import torch
from torch import nn

from clip_train.model.locking import lock_timm_trunk
from clip_train.model.lora import add_lora, refuse_lock_with_lora

TRAINING_ONLY_ARGUMENTS = {"pretrained", "pretrained_cfg_overlay", "patch_drop_rate"}


class ImageTower(nn.Module):
    """timm trunk (B, 3, H, W) -> pooled (B, F) -> projection (B, embed_dim), not yet normalised.

    `pool` is timm's `global_pool` ("token" for the CLS token, "avg" for the mean of patch
    tokens, "map" for attention pooling). Random init unless `pretrained`; pretrained weights
    come from timm's cache, a local file (`pretrained_cfg_overlay=dict(file=...)`) or the hub.

    patch_dropout: FLIP's token dropping, the fraction of patch tokens removed at random in
        training (the class token is kept); evaluation sees every patch.
    grad_checkpointing: recompute block activations in backward instead of storing them.
    width: the trunk's token width, timm's `embed_dim`, when it differs from the architecture's
        (a published CLIP of another size on a timm CLIP-layout ViT); named apart from `embed_dim`,
        the shared space's size. Other timm arguments (depth, num_heads, act_layer) pass through.
    lock: freeze the trunk but its last `unlocked_groups` timm layer groups (LiT); with
        `freeze_norm=False` its norm layers keep training.
    projection: "linear" (a matrix, CLIP's) or "none": the pooled features are the shared space's (SigLIP's
        attention-pooled ViTs, OpenCLIP's `timm_proj: none`); then `embed_dim` must be the trunk's width, and
        `lock` with no unlocked group freezes the whole tower (LiT's locked image tower: nothing projects after it).
    lora: LoRA adapters on the trunk (`clip_train.model.lora`: rank, alpha, dropout, target_modules); rank 0 or
        None: none. Only the adapters and the projection then train.
    """

    def __init__(
        self,
        model_name: str,
        embed_dim: int,
        image_size: int,
        pool: str = "token",
        pretrained: bool = False,
        patch_dropout: float = 0.0,
        grad_checkpointing: bool = False,
        lock: bool = False,
        unlocked_groups: int = 0,
        freeze_norm: bool = True,
        width: int | None = None,
        projection: str = "linear",
        lora: dict | None = None,
        **timm_kwargs,
    ):
        super().__init__()
        refuse_lock_with_lora(lock, lora, "model.image_tower")
        self.image_size, self.embed_dim = image_size, embed_dim
        if patch_dropout:  # only token-based trunks take it
            timm_kwargs["patch_drop_rate"] = patch_dropout
        if width is not None:
            timm_kwargs["embed_dim"] = width
        # lists from a config (ConvNeXt's `depths=[3,3,27,3]`) as plain lists: timm hands them to torch
        timm_kwargs = {key: list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value
                       for key, value in timm_kwargs.items()}  # fmt: skip
        create = dict(pretrained=pretrained, num_classes=0, global_pool=pool, **timm_kwargs)
        try:
            try:
                self.trunk, sized = timm.create_model(model_name, img_size=image_size, **create), True
            except TypeError as error:  # convolutional trunks take any size and have no img_size argument
                if "img_size" not in str(error):
                    raise
                self.trunk, sized = timm.create_model(model_name, **create), False
        except TypeError as error:
            if "patch_drop_rate" not in str(error):
                raise
            raise ValueError(
                f"model.image_tower.patch_dropout={patch_dropout}: {model_name} has no patch tokens to drop (a "
                "convolutional trunk); set it to 0, or use a ViT"
            ) from None
        # what built the trunk, but its weights' source and the training-only patch dropout: enough to
        # rebuild the same trunk elsewhere (transformers' TimmWrapperModel in an export)
        built_from = {key: value for key, value in create.items() if key not in TRAINING_ONLY_ARGUMENTS}
        self.timm_arguments = {"model_name": model_name, **({"img_size": image_size} if sized else {}), **built_from}
        self.token_width = self.trunk.num_features
        self.projection = self._projection(projection, model_name)
        if grad_checkpointing:
            self.set_grad_checkpointing()
        if lock:
            self.lock(unlocked_groups, freeze_norm)
        self.lora = add_lora(self.trunk, lora, "model.image_tower.lora")

    def _projection(self, kind: str, model_name: str) -> nn.Module:
        if kind == "none":
            if self.token_width != self.embed_dim:
                raise ValueError(
                    f"model.image_tower.projection=none: {model_name} pools {self.token_width}-d features, but "
                    f"embed_dim={self.embed_dim}; without a projection they must be equal"
                )
            return nn.Identity()
        if kind != "linear":
            raise ValueError(f"model.image_tower.projection must be 'linear' or 'none', got {kind!r}")
        projection = nn.Linear(self.token_width, self.embed_dim, bias=False)
        nn.init.normal_(projection.weight, std=self.token_width**-0.5)
        return projection

    def lock(self, unlocked_groups: int = 0, freeze_norm: bool = True) -> None:
        """Freeze the trunk but its last `unlocked_groups` timm layer groups (see `lock_timm_trunk`)."""
        lock_timm_trunk(self.trunk, unlocked_groups, freeze_norm)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.trunk.set_grad_checkpointing(enable)

    def no_weight_decay(self) -> set[str]:
        """Trunk parameters timm marks as not to decay (position embeddings, class tokens); timm's ViT also
        names tokens it may lack (`dist_token`, `reg_token`), which are left out."""
        trunk_names = self.trunk.no_weight_decay() if hasattr(self.trunk, "no_weight_decay") else set()
        return {f"trunk.{name}" for name, _ in self.trunk.named_parameters() if name in trunk_names}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, embed_dim)."""
        return self.projection(self.trunk(images))

    def forward_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> ((B, embed_dim) as `forward`, (B, N, token_width) the trunk's tokens before pooling)."""
        tokens = self.trunk.forward_features(images)
        features = self.projection(self.trunk.forward_head(tokens, pre_logits=True))
        if tokens.ndim == 4:  # a convolutional trunk: (B, C, H, W) -> (B, H·W, C)
            tokens = tokens.flatten(2).transpose(1, 2)
        return features, tokens
