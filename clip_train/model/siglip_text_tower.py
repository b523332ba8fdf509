"""SigLIP's text tower: a bidirectional transformer pooled at the last position, a biased linear head.

    token ids (B, L), always padded to the context length L -> transformers' `SiglipTextModel` trunk
    (no causal mask, no padding mask: every position sees every other, pads included, as SigLIP was
    trained) -> final LayerNorm -> the state at position L - 1 -> projection (with bias) -> (B, embed_dim)

The pooled position is the last one, not the last real token: what it holds depends on how many pads
precede it, so captions must be padded to the full context length (our tokenizer always is). The
transformers model's own `head` is taken out and kept as our `projection`, so the projection is named
as in every other tower (locking keeps it trainable, CoCa reads it); `clip_train.interop.hf_keys`
maps it to and from `text_model.head`.
"""

import torch
from torch import nn
from transformers import SiglipTextConfig, SiglipTextModel

from clip_train.model.text_tower import TransformerTextTower


class SiglipTextTower(TransformerTextTower):
    """SigLIP's text transformer, randomly initialised from a size spec (`SiglipTextConfig` defaults otherwise:
    GELU with tanh approximation, LayerNorm eps 1e-6).

    pad_token_id: the tokenizer's pad id; the trunk never reads it (no padding mask), transformers' config
        carries it, so an export's processor pads with it.
    lora: LoRA adapters on the trunk's linear layers (`clip_train.model.lora`); rank 0 or None: none.
    """

    def __init__(
        self,
        embed_dim: int,
        vocab_size: int,
        width: int,
        layers: int,
        heads: int,
        context_length: int,
        mlp_ratio: float = 4.0,
        grad_checkpointing: bool = False,
        lock: bool = False,
        unlocked_layers: int = 0,
        freeze_norm: bool = True,
        pad_token_id: int | None = None,
        activation: str = "gelu_pytorch_tanh",
        layer_norm_eps: float = 1e-6,
        lora: dict | None = None,
    ):
        config = SiglipTextConfig(
            vocab_size=vocab_size,
            hidden_size=width,
            intermediate_size=int(width * mlp_ratio),
            num_hidden_layers=layers,
            num_attention_heads=heads,
            max_position_embeddings=context_length,
            projection_size=embed_dim,
            hidden_act=activation,
            layer_norm_eps=layer_norm_eps,
            pad_token_id=pad_token_id,
            bos_token_id=None,
            eos_token_id=None,
        )
        transformer = SiglipTextModel(config)
        transformer.head = nn.Identity()  # the head is ours: `projection`
        super().__init__(transformer, embed_dim, projection="linear", projection_bias=True)
        self.context_length = context_length
        self._apply_memory_options(grad_checkpointing, lock, unlocked_layers, freeze_norm)
        self._add_lora(lora, lock)

    def forward_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L), (B, L) -> ((B, embed_dim) from position L - 1, (B, L, width) states); the mask is not read
        (SigLIP attends to pads), but L must be the context length, which is checked."""
        if input_ids.shape[1] != self.context_length:
            raise ValueError(
                f"SigLIP's text tower pools the last of {self.context_length} positions; it got {input_ids.shape[1]} "
                "tokens: pad every caption to the context length (padding='max_length')"
            )
        hidden = self.transformer(input_ids=input_ids).last_hidden_state
        return self.projection(hidden[:, -1]), hidden
