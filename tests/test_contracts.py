"""Every evaluation task config and every objective config meets its contract, as test_towers.py checks every
tower config: a task or objective added to configs/eval/task/ or configs/loss/ is covered the day it is added.

A task (`clip_train.eval.tasks.EvalTask`) has `run(model, rank, world)`; a validation task (configs/eval/task/
validation_*.yaml, `ValidationTask`) also `start(rank, world)` and `observe(model, batch, features)`. A task
config that needs data (a root, a checkpoint) refuses to build without it, naming the key it leaves unset. An
objective (`clip_train.objectives.Objective`) fits the model that gives what it reads, and k micro-batches give
its full-batch loss, terms and gradients.
"""

import inspect
import math
from contextlib import nullcontext

import pytest
import torch
from helpers import float64_encoder, make_batch, options, small_coca, tiny_clip_model
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import MissingMandatoryValue, OmegaConf

from clip_train.eval.tasks import ValidationTask, named_tasks, run_tasks
from clip_train.objectives import check_objective
from clip_train.training.accumulation import contrastive_backward


def _task_config(compose_config, option: str):
    return compose_config("eval=none", f"+eval/task@eval.tasks.probe={option}").eval.tasks


def _task(compose_config, option: str):
    return named_tasks(instantiate(_task_config(compose_config, option), _convert_="partial"))["probe"]


def _parameters(method) -> list[str]:
    return list(inspect.signature(method).parameters)


def _is_metrics(metrics: dict) -> bool:
    """{name: float} or {name: {part: float}} (a breakdown such as zero-shot per_class), every number finite."""
    values = [v for value in metrics.values() for v in (value.values() if isinstance(value, dict) else [value])]
    return all(isinstance(key, str) for key in metrics) and all(isinstance(v, float) and math.isfinite(v) for v in values)


@pytest.mark.parametrize("option", options("eval/task"))
def test_task_configs_build_a_task_or_name_the_data_they_need(compose_config, option):
    try:
        task = _task(compose_config, option)
    except InstantiationException as refused:  # a benchmark on disk, a VLM run: no default data
        unset = [key for key, value in _task_config(compose_config, option).probe.items() if value is None]
        assert isinstance(refused.__cause__, ValueError), refused
        assert any(key in str(refused.__cause__) for key in unset), f"{refused.__cause__} names none of {unset}"
        return
    assert _parameters(task.run) == ["model", "rank", "world"]
    if option.startswith("validation_"):
        assert isinstance(task, ValidationTask)
        assert _parameters(task.start) == ["rank", "world"] and _parameters(task.observe) == ["model", "batch", "features"]
    else:
        assert not isinstance(task, ValidationTask)


@pytest.mark.slow
@pytest.mark.parametrize("option", options("eval/task"))
def test_task_configs_that_need_no_data_run_on_a_model(compose_config, option):
    try:
        task = _task(compose_config, option)
    except InstantiationException:
        pytest.skip(f"{option} needs a benchmark on disk")  # its own test file writes one
    model = tiny_clip_model()
    if isinstance(task, ValidationTask):  # two validation batches, embedded as ClipModule.validation_step does
        task.start(0, 1)
        for seed in (0, 1):
            size = model.image_size
            batch = {key: value for key, value in make_batch(seed=seed).items() if key != "image"}
            batch["image"] = torch.rand(8, 3, size, size, generator=torch.Generator().manual_seed(seed))
            with torch.no_grad():
                image_features, text_features = model.network(batch)
            task.observe(model, batch, {"image_features": image_features, "text_features": text_features})
    metrics = run_tasks({"probe": task}, model, 0, 1)
    assert _is_metrics(metrics) and all(name.startswith("probe/") for name in metrics)


def _keys(node) -> list[tuple]:
    """(parent node, key) of every leaf of `node`, nested ones included."""
    leaves = []
    for key in node:
        if OmegaConf.is_config(node._get_node(key)) and not OmegaConf.is_missing(node, key):
            leaves += _keys(node[key])
        else:
            leaves.append((node, key))
    return leaves


def _model_for(objective):
    """The test model that gives what `objective` reads: CoCa for a caption NLL, a logit bias when it reads one."""
    model = small_coca().double() if "caption_nll" in objective.reads else float64_encoder("infonce")
    if "logit_bias" in objective.scalars:  # as model.init_logit_bias does
        model.register_parameter("logit_bias", torch.nn.Parameter(torch.full((1,), -2.0, dtype=torch.float64)))
    model.logit_scale.requires_grad_("logit_scale" in objective.scalars)  # as ClipModule does
    return model


def _step(objective, micro_batches: int) -> tuple[dict, dict]:
    model = _model_for(objective)
    check_objective(model, objective)
    losses = contrastive_backward(model, objective, make_batch(), micro_batches, lambda loss: loss.backward(), nullcontext)
    return losses, {name: p.grad for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("option", options("loss"))
def test_objective_configs_fit_their_model_and_accumulate_exactly(compose_config, option):
    loss = compose_config(f"loss={option}").loss
    missing = [key for key in _keys(loss) if OmegaConf.is_missing(*key)]
    if missing:  # a key the user must set (distillation's teacher): instantiating names it
        with pytest.raises(MissingMandatoryValue, match=missing[0][1]):
            instantiate(loss)
        pytest.skip(f"loss={option} needs {missing[0][1]} set; its own test file sets it")
    objective = instantiate(loss)
    full_losses, full = _step(objective, 1)
    losses, accumulated = _step(objective, 2)
    assert "loss" in full_losses and torch.isfinite(full_losses["loss"])
    assert [name for name, grad in full.items() if grad is None] == []  # no unused parameter (DDP refuses one)
    assert losses.keys() == full_losses.keys() and accumulated.keys() == full.keys()
    for term in full_losses:
        torch.testing.assert_close(losses[term], full_losses[term], msg=term)
    for name in full:
        torch.testing.assert_close(accumulated[name], full[name], msg=name)
