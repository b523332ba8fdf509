"""Text towers built on transformers: a CLIP-style causal transformer, or any pretrained AutoModel.

Both map (input_ids, attention_mask) of shape (B, L) to (B, embed_dim) and are `Tower`s
(`clip_train.model.tower`, the contract every tower meets). Both take the same memory options:
`grad_checkpointing` (recompute layer activations in backward) and LiT-style `lock` (freeze all
but the last `unlocked_layers` layers; `freeze_norm=False` keeps norms training), and both take `lora`:
adapters on the transformer's linear layers (`clip_train.model.lora`), with only them and the projection training.
"""

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, CLIPTextConfig, CLIPTextModel, PretrainedConfig

from clip_train.model.locking import lock_text_transformer
from clip_train.model.lora import add_lora, refuse_lock_with_lora

TEXT_ACTIVATIONS = ("quick_gelu", "gelu")
PROJECTIONS = ("linear", "mlp")


def text_projection(kind: str, width: int, embed_dim: int, bias: bool = False) -> nn.Module:
    """The map (B, width) -> (B, embed_dim) into the shared space.

    linear: one matrix (CLIP's). mlp: OpenCLIP's head for transformers text models (`hf_proj_type: mlp`),
    Linear -> GELU -> Linear through (width + embed_dim) // 2, without biases.
    """
    if kind == "linear":
        projection = nn.Linear(width, embed_dim, bias=bias)
        nn.init.normal_(projection.weight, std=width**-0.5)
        if bias:
            nn.init.zeros_(projection.bias)
        return projection
    if kind == "mlp":
        hidden = (width + embed_dim) // 2
        return nn.Sequential(nn.Linear(width, hidden, bias=False), nn.GELU(), nn.Linear(hidden, embed_dim, bias=False))
    raise ValueError(f"model.text_tower.projection must be one of {PROJECTIONS}, got {kind!r}")


def _embedding_weights(tower: nn.Module) -> set[str]:
    """Token and position embedding tables: lookup rows, not weights to shrink."""
    return {f"{name}.weight" for name, module in tower.named_modules() if isinstance(module, nn.Embedding)}


def last_token(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L, W) -> (B, W): the state at the last attended position, the end-of-text token.

    With right padding and causal attention only that position has seen the whole caption.
    It is found from the mask, not by a token id, so it works for any tokenizer.
    """
    last = attention_mask.sum(dim=1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class TransformerTextTower(nn.Module):
    """What both towers share: a transformers model `transformer` giving (B, L, W) states, a `projection`
    (W -> embed_dim), and the `Tower` members but `forward_tokens`, which pools as the subclass does."""

    def __init__(self, transformer: nn.Module, embed_dim: int, projection: str = "linear", projection_bias: bool = False):
        super().__init__()
        self.transformer = transformer
        self.embed_dim, self.token_width = embed_dim, transformer.config.hidden_size
        self.projection = text_projection(projection, self.token_width, embed_dim, projection_bias)

    def _apply_memory_options(self, grad_checkpointing: bool, lock: bool, unlocked_layers: int, freeze_norm: bool):
        if grad_checkpointing:
            self.set_grad_checkpointing()
        if lock:
            self.lock(unlocked_layers, freeze_norm)

    def _add_lora(self, lora: dict | None, lock: bool) -> None:
        """Adapters on the transformer (after its weights are in place, so they adapt the source's)."""
        refuse_lock_with_lora(lock, lora, "model.text_tower")
        self.lora = add_lora(self.transformer, lora, "model.text_tower.lora")

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if not enable:
            self.transformer.gradient_checkpointing_disable()
        elif hasattr(self.transformer, "activation_checkpointing_enable"):  # the transformers >= 5 name
            self.transformer.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            self.transformer.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def lock(self, unlocked_groups: int = 0, freeze_norm: bool = True) -> None:
        """Freeze the transformer but its last `unlocked_groups` layers (see `lock_text_transformer`)."""
        lock_text_transformer(self.transformer, unlocked_groups, freeze_norm)

    def no_weight_decay(self) -> set[str]:
        return _embedding_weights(self)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.forward_tokens(input_ids, attention_mask)[0]


class CausalTextTower(TransformerTextTower):
    """CLIP's text transformer, randomly initialised from a size spec, pooled at end of text.

    eos_token_id: the tokenizer's end-of-text id. This tower pools by the attention mask, but the
        transformers config carries the id, so a `CLIPTextModel` made from it (an export) pools at
        the same position; None where no such model is made (0 then only has to lie in the vocabulary).
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
        eos_token_id: int | None = None,
        activation: str = "quick_gelu",
        lora: dict | None = None,
    ):
        if activation not in TEXT_ACTIVATIONS:
            raise ValueError(f"model.text_tower.activation must be one of {TEXT_ACTIVATIONS}, got {activation!r}")
        config = CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=width,
            intermediate_size=int(width * mlp_ratio),
            num_hidden_layers=layers,
            num_attention_heads=heads,
            max_position_embeddings=context_length,
            pad_token_id=0,
            bos_token_id=0,
            eos_token_id=0 if eos_token_id is None else eos_token_id,
            hidden_act=activation,
        )
        super().__init__(CLIPTextModel(config), embed_dim)
        self.context_length = context_length
        self._apply_memory_options(grad_checkpointing, lock, unlocked_layers, freeze_norm)
        self._add_lora(lora, lock)

    def forward_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L), (B, L) -> ((B, embed_dim) pooled at end of text, (B, L, width) causal states)."""
        # Only the causal mask goes to attention: with right padding, no position up to the end of
        # text can see a pad token anyway, so the pooled state is the same and attention keeps its
        # fast causal kernel instead of an explicit (B, 1, L, L) mask.
        hidden = self.transformer(input_ids=input_ids).last_hidden_state
        return self.projection(last_token(hidden, attention_mask)), hidden


def _transformers_config(name_or_path: str, config: dict | None) -> PretrainedConfig:
    """The config `config` spells out, or else the one `name_or_path` holds."""
    if config is None:
        return AutoConfig.from_pretrained(name_or_path)
    config = dict(config)
    return AutoConfig.for_model(config.pop("model_type"), **config)


class PretrainedTextTower(TransformerTextTower):
    """Any transformers encoder by hub name or local folder, mean- or CLS-pooled.

    The architecture is always built from its transformers config (`AutoModel.from_config`), then
    `pretrained=True` copies the source's weights into it. Building from the config, never through
    `from_pretrained`, keeps the module the same whether or not weights were read: `from_pretrained`
    in transformers 5 also swaps in hub kernels when the `kernels` package is installed, which a
    meta-device copy (the FLOPs count) cannot take. `pretrained=False` keeps the random weights.
    `vocab_size` is the tokenizer's; it must fit the model's embedding table.

    projection: "linear" (one matrix) or "mlp" (OpenCLIP's `hf_proj_type: mlp`, see `text_projection`).
    pooler_layer: False builds the model without the pooler head the tower never uses (`add_pooling_layer=False`,
        as OpenCLIP builds its mean-pooled towers); True keeps it, frozen (below).

    transformers_config: the model's transformers config as a dict (`PretrainedConfig.to_dict()`); when
        given, the architecture is built from it and `name_or_path` is never read (with `pretrained=False`).
        A checkpoint's recipe carries it (`clip_train.model.weight_sources`), so the tower rebuilds
        without its source.

    The tower pools over `last_hidden_state`, so a pooler head the model carries (BERT's, RoBERTa's)
    never gets a gradient; it is kept in the weights but never trainable, locked or not, since DDP
    without `find_unused_parameters` fails on a trainable parameter without gradient ("Expected to have
    finished reduction in the prior iteration").
    """

    def __init__(
        self,
        name_or_path: str,
        embed_dim: int,
        vocab_size: int,
        pooling: str = "mean",
        pretrained: bool = True,
        grad_checkpointing: bool = False,
        lock: bool = False,
        unlocked_layers: int = 0,
        freeze_norm: bool = True,
        transformers_config: dict | None = None,
        projection: str = "linear",
        pooler_layer: bool = True,
        lora: dict | None = None,
    ):
        if pooling not in ("mean", "cls"):
            raise ValueError(f"model.text_tower.pooling must be 'mean' or 'cls', got {pooling!r}")
        without_pooler = {} if pooler_layer else {"add_pooling_layer": False}
        transformer = AutoModel.from_config(_transformers_config(name_or_path, transformers_config), **without_pooler)
        if pretrained:
            transformer.load_state_dict(AutoModel.from_pretrained(name_or_path, **without_pooler).state_dict())
        super().__init__(transformer, embed_dim, projection)
        self.pooling = pooling
        table = self.transformer.get_input_embeddings().num_embeddings
        if vocab_size > table:
            raise ValueError(
                f"the tokenizer has {vocab_size} tokens but {name_or_path} embeds only {table}; "
                "set data.tokenizer to the tokenizer this text model was trained with"
            )
        self._apply_memory_options(grad_checkpointing, lock, unlocked_layers, freeze_norm)
        self._freeze_pooler()
        self._add_lora(lora, lock)

    def _freeze_pooler(self) -> None:
        pooler = getattr(self.transformer, "pooler", None)
        if isinstance(pooler, nn.Module):
            pooler.requires_grad_(False)

    def forward_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L), (B, L) -> ((B, embed_dim) mean- or CLS-pooled, (B, L, hidden size) states)."""
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return self.projection(pooled), hidden
