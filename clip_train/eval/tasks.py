"""Evaluation tasks: the one method a task has, and the loop that runs the configured ones.

A task is any object with `run(model, rank, world) -> {metric: value}`, built by Hydra from a
`_target_` node under `eval.tasks` (`configs/eval/`). All it needs besides the model (its set,
batch size, loader workers, progress bar) comes through its constructor. Every rank calls `run`
with its rank and the world size, reads its own share of the set and sums its counts over ranks
(`clip_train.distributed`), so every rank returns the same metrics. A task must never work on
rank 0 alone: the other ranks would wait for ever in their next collective (an NCCL hang).

A metric is named by the task's path under `eval.tasks`, `/` between the parts, then the key
the task returned: `eval.tasks.zeroshot.shapes` reports `zeroshot/shapes/top1`, and
`eval.tasks.retrieval` reports `retrieval/image_to_text_R@5`. A node without `_target_` only
groups tasks. Values are floats, or a {name: float} breakdown (zero-shot `per_class`) that goes
to metrics.json but not to the dashboard.

A validation task (`ValidationTask`) is a task over the training run's own validation batches (validation
retrieval, captioning): it has `run` like every task, and before it `start` with each validation pass and
`observe` with each of this rank's validation batches and the embeddings the module computed for it. Its
metrics are named `val/<metric>` (`val/image_to_text_R@1`, `val/bleu4`), and a `tables()` method, when it
has one, gives {key: (columns, rows)} examples for the dashboard.

`python -m clip_train.evaluate` and the in-training `EvaluationCallback` both run this loop, `run_tasks`.
"""

from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

import torch

from clip_train.inference import ClipModel


class EvalTask(Protocol):
    def run(self, model: ClipModel, rank: int, world: int) -> dict[str, float | dict[str, float]]:
        """This rank's share evaluated, reduced over all `world` ranks: the same metrics on every rank."""


@runtime_checkable
class ValidationTask(EvalTask, Protocol):
    def start(self, rank: int, world: int) -> None:
        """A validation pass begins: forget the last one's batches."""

    def observe(self, model: ClipModel, batch: dict[str, torch.Tensor], features: dict[str, torch.Tensor]) -> None:
        """One of this rank's validation batches and its `image_features`, `text_features` (B, D) from the module."""


def named_tasks(tasks: Mapping, path: tuple[str, ...] = ()) -> dict[str, EvalTask]:
    """{metric prefix: task} of an instantiated `eval.tasks` tree, e.g. {"zeroshot/shapes": ZeroShotTask(...)}.

    A leaf without a `run` method (a key set without a `_target_`) raises ValueError naming it.
    """
    named = {}
    for key, node in tasks.items():
        if isinstance(node, Mapping):
            named |= named_tasks(node, (*path, str(key)))
        elif callable(getattr(node, "run", None)):
            named["/".join((*path, str(key)))] = node
        else:
            where = ".".join(("eval.tasks", *path, str(key)))
            raise ValueError(
                f"{where} = {node!r} is not an evaluation task. Add a task with its node, e.g. "
                f"+eval/task@eval.tasks.zeroshot.NAME=zeroshot, then set its keys (docs/evaluation.md)"
            )
    return named


def run_tasks(tasks: Mapping[str, EvalTask] | Iterable[tuple[str, EvalTask]], model: ClipModel, rank: int, world: int) -> dict:
    """Every task's metrics, named `<prefix>/<metric>`, over all ranks. Every rank must call this with the same tasks.

    tasks: {prefix: task}, or (prefix, task) pairs when several tasks share a prefix (the validation tasks' `val`).
    """
    metrics = {}
    for prefix, task in tasks.items() if isinstance(tasks, Mapping) else tasks:
        metrics |= {f"{prefix}/{key}": value for key, value in task.run(model, rank, world).items()}
    return metrics
