"""Config checks that run before any work: every key must be an argument its `_target_` accepts.

Hydra already rejects overrides of keys that do not exist (`data.batch_sze=8`); this catches
the rest (`+trainer.max_step=5`, a misspelt key in an experiment file) with the full key path,
a suggestion and the accepted names, before data is written or a model is built.
"""

import difflib
import inspect

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from clip_train.training.training_length import check_training_length

HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


def _accepted_names(target: str) -> set[str] | None:
    """Argument names of `target`, or None when it takes **kwargs (anything goes)."""
    obj = get_object(target)
    signature = inspect.signature(obj.__init__ if inspect.isclass(obj) else obj)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return None
    return {name for name in signature.parameters if name != "self"}


def _check_node(node, path: str) -> None:
    if isinstance(node, dict):
        target = node.get("_target_")
        if isinstance(target, str):
            accepted = _accepted_names(target)
            unknown = sorted(set(node) - HYDRA_KEYS - (accepted if accepted is not None else set(node)))
            if unknown:
                key = unknown[0]
                close = difflib.get_close_matches(key, sorted(accepted), n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise ValueError(
                    f"Unknown config key '{path}{key}' for {target}.{hint} Accepted: {', '.join(sorted(accepted))}"
                )
        for key, child in node.items():
            _check_node(child, f"{path}{key}.")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            _check_node(child, f"{path}{index}.")


def check_keys(cfg: DictConfig) -> None:
    """Raise ValueError naming the first key no component accepts (training and evaluation configs alike)."""
    _check_node(OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False), "")


def check_config(cfg: DictConfig) -> None:
    """Raise ValueError naming the first key no component accepts, or a setting that breaks contrastive training."""
    check_keys(cfg)
    check_training_length(cfg.trainer.get("max_steps"), cfg.trainer.get("max_epochs"))
    if cfg.trainer.get("accumulate_grad_batches", 1) != 1:
        raise ValueError(
            "trainer.accumulate_grad_batches must be 1: accumulating gradients of separate contrastive "
            "batches drops the negatives between them. Set optim.accumulate=k instead: it splits each batch "
            "into k micro-batches and keeps every negative"
        )
    if cfg.trainer.get("gradient_clip_val") is not None:
        raise ValueError("trainer.gradient_clip_val is not used (optimization is manual): set optim.gradient_clip_norm")
    check_monitored_metrics(cfg)


def check_monitored_metrics(cfg: DictConfig) -> None:
    """A callback monitoring a `val/` metric (best_checkpoint, an EarlyStopping) needs the validation tasks of
    `callbacks.evaluation` that log it: without them Lightning fails at the first validation, after the steps
    before it were spent."""
    callbacks = cfg.get("callbacks") or {}
    evaluation = callbacks.get("evaluation") or {}
    if evaluation.get("validation"):
        return
    for name, callback in callbacks.items():
        monitor = callback.get("monitor") if isinstance(callback, DictConfig) else None
        if isinstance(monitor, str) and monitor.startswith("val/"):
            raise ValueError(
                f"callbacks.{name} monitors {monitor}, which the validation tasks of callbacks.evaluation log, and this "
                f"run has none: remove it too (~callbacks.{name}) or monitor another metric (callbacks.{name}.monitor)"
            )
