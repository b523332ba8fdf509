"""Evaluation tasks that read the embedded drawn scenes, kept out of runs on a user's own data.

`eval=synthetic` (the default) scores zero-shot shapes and colours and compositional pairs on drawn
pictures; a task left without a set of its own (`root` or `shards` null) also falls back to the drawn
validation split. On a user's shards such numbers describe pictures the model never trained on, so
`train.run` removes these tasks whenever `data.train` (or `data.train_shards`) or `data.sources` is set, and logs it.
"""

from omegaconf import DictConfig, open_dict


def trains_on_embedded_scenes(data: DictConfig) -> bool:
    """Whether the run's training data is the embedded drawn set (no `train`, `train_shards` nor `sources` given)."""
    given = data.get("train") is not None or data.get("train_shards") is not None or data.get("sources")
    return data.get("synthetic") is not None and not given


def _reads_drawn_scenes(node: DictConfig) -> bool:
    """A task node (with `_target_`) whose set is unset: a zero-shot task without `root`, another without `shards`."""
    return any(key in node and node[key] is None for key in ("root", "shards"))


def drop_drawn_tasks(tasks: DictConfig, path: str = "eval.tasks") -> list[str]:
    """Remove from `tasks` (in place) every task that reads the drawn scenes; returns their config paths."""
    dropped = []
    for key in list(tasks.keys()):
        node = tasks[key]
        if not isinstance(node, DictConfig):
            continue
        if "_target_" not in node:
            dropped += drop_drawn_tasks(node, f"{path}.{key}")
        elif _reads_drawn_scenes(node):
            dropped.append(f"{path}.{key}")
            with open_dict(tasks):
                del tasks[key]
    return dropped
