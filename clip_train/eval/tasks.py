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

`python -m clip_train.evaluate` and the in-training `EvaluationCallback` both run this loop.
"""

from collections.abc import Mapping
from typing import Protocol

from clip_train.inference import ClipModel


class EvalTask(Protocol):
    def run(self, model: ClipModel, rank: int, world: int) -> dict[str, float | dict[str, float]]:
        """This rank's share evaluated, reduced over all `world` ranks: the same metrics on every rank."""


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
                f"+eval/task@eval.tasks.zeroshot.NAME=zeroshot, then set its keys (README 'Evaluating a trained model')"
            )
    return named


def run_tasks(tasks: Mapping[str, EvalTask], model: ClipModel, rank: int, world: int) -> dict:
    """Every task's metrics, named `<prefix>/<metric>`, over all ranks. Every rank must call this with the same tasks."""
    metrics = {}
    for prefix, task in tasks.items():
        metrics |= {f"{prefix}/{key}": value for key, value in task.run(model, rank, world).items()}
    return metrics
