"""LoRA on a tower's trunk through peft: low-rank adapters train, the trunk's own weights stay frozen.

    python -m clip_train model.image_tower.lora.rank=16 model.text_tower.lora.rank=16

Each adapted `nn.Linear` W (out × in) becomes peft's `lora.Linear`: W x + (alpha / rank) · B A x, with A
(rank × in) random and B (out × rank) zero at the start, so an adapted model starts as its source. The
trunk's weights move under `base_layer` (`blocks.0.attn.qkv.weight` -> `blocks.0.attn.qkv.base_layer.weight`)
beside `lora_A.default.weight` and `lora_B.default.weight`; a checkpoint holds both, so it rebuilds with no
source. peft freezes everything in the trunk but the adapters; the tower's projection into the shared
space (outside the trunk) and the model's temperature keep training.

Targets by default: every `nn.Linear` of the trunk, which is the attention and MLP layers of each block:
timm ViT `attn.qkv`, `attn.proj`, `mlp.fc1`, `mlp.fc2`; our causal text tower (transformers' CLIPTextModel)
`self_attn.{q,k,v,out}_proj`, `mlp.fc1`, `mlp.fc2`; BERT-like encoders `attention.self.{query,key,value}`,
`attention.output.dense`, `intermediate.dense`, `output.dense`. A transformers `pooler` is left out: the
tower pools itself, so adapters there would get no gradient (which DDP refuses).

`merge_adapters_` folds the adapters into plain weights (peft's `merge_and_unload`), as an export does.
"""

from collections.abc import Mapping
from dataclasses import dataclass, fields

import torch
from peft import LoraConfig
from peft.tuners.lora import LoraModel
from torch import nn

ADAPTER_NAME = "default"
ADAPTER_KEY_PARTS = (".lora_A.", ".lora_B.")
BASE_LAYER = "base_layer"
LEFT_OUT_MODULES = ("pooler",)  # transformers' pooler head, never read by our text towers


@dataclass(frozen=True)
class LoraSettings:
    """rank: r, the adapters' inner width (0: no adapters); alpha: the update's scale is alpha / rank;
    dropout: on each adapter's input, in training; target_modules: peft's `target_modules` (a list of module
    names or name suffixes, or one regular expression), None for every linear layer of the trunk."""

    rank: int = 0
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] | str | None = None

    @classmethod
    def parse(cls, config: Mapping | None, option: str) -> "LoraSettings":
        """The settings of the config node `option` (e.g. `model.image_tower.lora`); unknown keys are refused by name."""
        config = dict(config or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"{option}.{unknown[0]} is not a LoRA setting: expected {', '.join(sorted(known))}")
        targets = config.get("target_modules")
        if targets is not None and not isinstance(targets, str):  # a list from the config: plain strings
            config["target_modules"] = [str(name) for name in targets]
        settings = cls(**config)
        if settings.rank < 0 or settings.rank != int(settings.rank):
            raise ValueError(f"{option}.rank={settings.rank} must be a whole number >= 0 (0: no adapters)")
        if not 0 <= settings.dropout < 1:
            raise ValueError(f"{option}.dropout={settings.dropout} must be in [0, 1)")
        return settings


def default_target_modules(trunk: nn.Module) -> list[str]:
    """The qualified names of every `nn.Linear` in `trunk` outside a transformers pooler."""
    return [
        name
        for name, module in trunk.named_modules()
        if isinstance(module, nn.Linear) and not set(name.split(".")) & set(LEFT_OUT_MODULES)
    ]


class LoraAdapters:
    """The adapters put into one trunk, and peft's tuner that merges them. A plain object, not a module, so the
    tower's parameter names stay the trunk's own."""

    def __init__(self, trunk: nn.Module, settings: LoraSettings, option: str):
        targets = settings.target_modules if settings.target_modules is not None else default_target_modules(trunk)
        if not targets:
            raise ValueError(f"{option}: {type(trunk).__name__} has no linear layer to adapt; set {option}.target_modules")
        config = LoraConfig(
            r=int(settings.rank), lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=targets
        )
        try:
            self.tuner = LoraModel(trunk, config, ADAPTER_NAME)
        except ValueError as error:  # no module matched, or one peft cannot adapt
            raise ValueError(f"{option}.target_modules={targets!r}: {error}") from None
        self.settings = settings

    def merge(self) -> nn.Module:
        """Fold B A into each adapted weight and put the plain layers back (in place); returns the trunk."""
        return self.tuner.merge_and_unload()


def add_lora(trunk: nn.Module, config: Mapping | None, option: str) -> LoraAdapters | None:
    """Adapters on `trunk` as the config node `option` asks, or None when its rank is 0 (or it is unset)."""
    settings = LoraSettings.parse(config, option)
    return LoraAdapters(trunk, settings, option) if settings.rank else None


def refuse_lock_with_lora(lock: bool, config: Mapping | None, option: str) -> None:
    """`lock` and LoRA both decide which trunk weights train; peft would silently refreeze the unlocked layers."""
    if lock and LoraSettings.parse(config, f"{option}.lora").rank:
        raise ValueError(
            f"{option}.lock=true and {option}.lora.rank > 0: LoRA already freezes the trunk and trains adapters "
            f"beside it; set {option}.lock=false"
        )


def adapted_towers(model: nn.Module) -> dict[str, nn.Module]:
    """{name: tower} of the submodules of `model` holding adapters (`lora` set)."""
    return {name: m for name, m in model.named_modules() if isinstance(getattr(m, "lora", None), LoraAdapters)}


@torch.no_grad()
def merge_adapters_(model: nn.Module) -> list[str]:
    """Merge every tower's adapters into its weights, in place; returns the names of the towers merged."""
    towers = adapted_towers(model)
    for tower in towers.values():
        tower.lora.merge()
        tower.lora = None
    return sorted(towers)


def config_without_adapters(model_config: dict) -> dict:
    """A model config (plain dicts) whose towers build without adapters: what a merged model's recipe says."""
    config = dict(model_config)
    for name in ("image_tower", "text_tower"):
        tower = config.get(name)
        if isinstance(tower, dict) and "lora" in tower:
            config[name] = {key: value for key, value in tower.items() if key != "lora"}
    return config


def is_adapter_key(key: str) -> bool:
    """Whether a state-dict key is a LoRA adapter's weight."""
    return any(part in key for part in ADAPTER_KEY_PARTS)


def plain_to_adapted_keys(state: Mapping[str, torch.Tensor], model_keys) -> dict[str, torch.Tensor]:
    """A plain model's weights named as the adapted model names them: `x.weight` -> `x.base_layer.weight` where
    only the latter is a key of the model (a source without adapters loading into a model with them)."""
    model_keys = set(model_keys)
    renamed = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        adapted = f"{module}.{BASE_LAYER}.{leaf}"
        renamed[adapted if key not in model_keys and adapted in model_keys else key] = value
    return renamed


def trainable_parameter_report(model: nn.Module) -> str:
    """One line: trainable parameters of all, and how many of them are LoRA adapters."""
    total = sum(p.numel() for p in model.parameters())
    trainable = {name: p.numel() for name, p in model.named_parameters() if p.requires_grad}
    adapters = sum(count for name, count in trainable.items() if is_adapter_key(name))
    count = sum(trainable.values())
    return (
        f"trainable parameters: {count:,} of {total:,} ({100 * count / max(total, 1):.2f}%), "
        f"of which LoRA adapters: {adapters:,}"
    )
