"""Optimizer parameter groups and the learning-rate schedule.

Weight decay pulls weights towards zero, which is wrong for parameters that set a scale or
an offset. As in OpenCLIP, no parameter with fewer than 2 dimensions is decayed: biases (also
`nn.MultiheadAttention.in_proj_bias`), normalisation and LayerScale gains, the temperature
`logit_scale` and SigLIP's `logit_bias`; nor is what a module declares in `no_weight_decay()`
(position embeddings, class tokens, token embeddings). A rule by shape rather than by module
type or name catches the 1-D parameters of any tower without a list to keep up to date.
"""

import math

import torch
from torch import nn

from clip_train.training.layer_decay import layer_lr_scales


def no_decay_names(model: nn.Module) -> set[str]:
    """Qualified names of the parameters that must not be decayed: those of fewer than 2 dimensions,
    and those named by any submodule's `no_weight_decay()`."""
    names = {name for name, p in model.named_parameters() if p.ndim < 2}
    for prefix, module in model.named_modules():
        if prefix and callable(getattr(module, "no_weight_decay", None)):
            names.update(f"{prefix}.{name}" for name in module.no_weight_decay())
    return names


TEMPERATURE_NAMES = ("logit_scale", "logit_bias")


def parameter_groups(model: nn.Module, temperature_lr_scale: float = 1.0, layer_decay: float | None = None) -> list[dict]:
    """Two groups: decayed at the optimizer's `weight_decay`, and not decayed; frozen parameters are left out.

    temperature_lr_scale: unless 1, the model's own `logit_scale` and `logit_bias` form a third group, not decayed,
        whose `lr_scale` multiplies the optimizer's rate (`scale_learning_rates`). Adam moves a parameter by about
        its learning rate per step whatever its gradient, so at 5e-4 a log-temperature moves by 0.15 at most in
        300 steps: in a short run the temperature and SigLIP's bias stay where they started.
    layer_decay: unless None, each of the two groups is split by layer, each part with the `lr_scale` of
        `clip_train.training.layer_decay.layer_lr_scales` (LLRD; the temperature's scale stays its own).
    """
    skip = no_decay_names(model)
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    temperature = {name for name, _ in trainable if name in TEMPERATURE_NAMES} if temperature_lr_scale != 1 else set()
    groups = [
        {"params": [p for name, p in trainable if name not in skip | temperature]},
        {"params": [p for name, p in trainable if name in skip - temperature], "weight_decay": 0.0},
    ]
    if layer_decay is not None:
        scales = layer_lr_scales(model, layer_decay)
        decayed = [(name, p) for name, p in trainable if name not in skip | temperature]
        kept = [(name, p) for name, p in trainable if name in skip - temperature]
        groups = _by_scale(decayed, scales, {}) + _by_scale(kept, scales, {"weight_decay": 0.0})
    if temperature:
        params = [p for name, p in trainable if name in temperature]
        groups.append({"params": params, "weight_decay": 0.0, "lr_scale": temperature_lr_scale})
    return groups


def _by_scale(named: list[tuple[str, nn.Parameter]], scales: dict[str, float], options: dict) -> list[dict]:
    """One group per distinct scale among `named` parameters, the largest scale first (so the first group, whose
    rate the training step logs as `lr`, learns at the full rate when `named` holds a tower's top), with `options`."""
    parts: dict[float, list[nn.Parameter]] = {}
    for name, parameter in named:
        parts.setdefault(scales[name], []).append(parameter)
    return [{"params": parts[scale], "lr_scale": scale, **options} for scale in sorted(parts, reverse=True)]


def scale_learning_rates(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """Multiply each group's rate by its `lr_scale`, before a scheduler records the rates it scales."""
    for group in optimizer.param_groups:
        group["lr"] *= group.get("lr_scale", 1.0)
    return optimizer


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, final_lr_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0 over `warmup_steps` optimizer steps, then cosine decay to
    `final_lr_ratio` × the base rate at `total_steps`; stepped once per optimizer step."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return final_lr_ratio + (1 - final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def constant_with_warmup(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup_steps`, then the base rate to the end (OpenCLIP's `--lr-scheduler const`);
    `total_steps` is taken for the common signature and not needed."""
    return constant_with_cooldown(optimizer, warmup_steps, total_steps, cooldown_steps=0)


def constant_with_cooldown(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    total_steps: int,
    cooldown_steps: int,
    cooldown_power: float = 1.0,
    final_lr_ratio: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, the base rate, then over the last `cooldown_steps` a decay (1 - progress)^`cooldown_power` to
    `final_lr_ratio` × the base rate (OpenCLIP's `--lr-scheduler const-cooldown`, `--lr-cooldown-power`,
    `--lr-cooldown-end`): a run can be extended from a checkpoint before its cooldown, as WSD schedules are."""
    if not 0 <= cooldown_steps <= total_steps:
        raise ValueError(f"optim.scheduler.cooldown_steps={cooldown_steps} must be between 0 and the run's {total_steps} steps")
    cooldown_start = total_steps - cooldown_steps

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if cooldown_steps == 0 or step < cooldown_start:
            return 1.0
        decay = (1 - min(1.0, (step - cooldown_start) / cooldown_steps)) ** cooldown_power
        return final_lr_ratio + (1 - final_lr_ratio) * decay

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
