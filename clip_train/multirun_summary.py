"""Mean ± standard deviation of every final metric over the runs of a Hydra multirun.

    python -m clip_train --multirun seed=0,1,2                        # one group of 3 seeds
    python -m clip_train --multirun seed=0,1,2 loss=infonce,siglip    # two groups of 3, side by side
    python -m clip_train.evaluate --multirun checkpoint=a.ckpt,b.ckpt,c.ckpt

One seed cannot tell a change from chance (at 300 steps, one seed moves held-out R@1 by ±15%), so a
sweep over `seed` ends with its spread. Runs are grouped by their overrides other than the `over`
keys (`seed` and `checkpoint`), so every other swept key gives a group of its own. The summary
is read from each job's `metrics.json` once all jobs returned, which works the same whether the
basic launcher ran them one after the other or submitit ran them as SLURM jobs; a job that wrote
no metrics (it failed, or it was not rank 0's folder) is named and left out.

Written into the sweep folder: `summary.json` ({group: {metric: {mean, std, n, values}}}, std the
sample standard deviation over runs, null for one run) and `summary.md` (the same as a Markdown
table, with each run's value), which is also logged.
"""

import json
import logging
import math
import os
import statistics
from collections.abc import Iterable, Mapping

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def numeric_leaves(metrics: Mapping, prefix: str = "") -> dict[str, float]:
    """Flatten nested metric dicts ({'zeroshot/x/per_class': {'red': 0.9}} -> 'zeroshot/x/per_class/red') to finite numbers."""
    flat = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat |= numeric_leaves(value, f"{name}/")
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            flat[name] = float(value)
    return flat


def spread(values: list[float]) -> dict:
    """{mean, std (sample, over runs; None for one run), n, values}."""
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "n": len(values),
        "values": values,
    }


def summarise(runs: Iterable[tuple[list[str], dict]], over: Iterable[str]) -> dict[str, dict[str, dict]]:
    """Group (overrides, metrics) runs by the swept keys other than `over`; each metric's spread per group.

    A group is named by those keys' overrides ('loss=siglip'), or 'all' when only `over` keys vary; an override
    every run shares (`debug=fast`) names no group."""
    runs = [(dict(_key_value(o) for o in overrides), metrics) for overrides, metrics in runs]
    over = set(over)
    keys = sorted({key for overrides, _ in runs for key in overrides} - over)
    swept = [key for key in keys if len({overrides.get(key) for overrides, _ in runs}) > 1]
    groups: dict[str, list[dict[str, float]]] = {}
    for overrides, metrics in runs:
        name = " ".join(f"{key}={overrides[key]}" for key in swept if key in overrides)
        groups.setdefault(name or "all", []).append(numeric_leaves(metrics))
    summary = {}
    for name, group in groups.items():
        names = sorted(set().union(*group))
        summary[name] = {metric: spread([run[metric] for run in group if metric in run]) for metric in names}
    return summary


def _key_value(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def markdown(summary: dict[str, dict[str, dict]]) -> str:
    """One table: a row per metric, a column per group, cells 'mean ± std (n)', then each run's values."""
    groups = list(summary)
    metrics = sorted(set().union(*(summary[g] for g in groups)))
    lines = ["| metric | " + " | ".join(groups) + " |", "|---" * (len(groups) + 1) + "|"]
    for metric in metrics:
        cells = []
        for group in groups:
            s = summary[group].get(metric)
            cells.append("" if s is None else f"{_number(s['mean'])} ± {_number(s['std'])} (n={s['n']}): "
                         + ", ".join(_number(v) for v in s["values"]))  # fmt: skip
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def read_runs(sweep_dir: str) -> list[tuple[list[str], dict]]:
    """(overrides, metrics) of every job folder of `sweep_dir` that wrote metrics.json, in job order."""
    runs = []
    jobs = sorted((d for d in os.listdir(sweep_dir) if os.path.isdir(os.path.join(sweep_dir, d))), key=_job_order)
    for job in jobs:
        folder = os.path.join(sweep_dir, job)
        overrides_file = os.path.join(folder, ".hydra", "overrides.yaml")
        metrics_file = os.path.join(folder, "metrics.json")
        if not os.path.isfile(overrides_file):
            continue  # not a job folder (e.g. .submitit)
        if not os.path.isfile(metrics_file):
            log.warning("multirun summary: %s wrote no metrics.json (failed?); left out", folder)
            continue
        with open(overrides_file) as f, open(metrics_file) as m:
            runs.append((list(yaml.safe_load(f) or []), json.load(m)))
    return runs


def _job_order(name: str) -> tuple[int, str]:
    return (int(name), name) if name.isdigit() else (1 << 30, name)


class MultirunSummary(Callback):
    """Hydra callback (configs/hydra/default.yaml): at the end of a multirun, summary.json and summary.md in the
    sweep folder, over the runs that differ only in the `over` keys."""

    def __init__(self, over: Iterable[str] = ("seed", "checkpoint")):
        self.over = list(over)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = config.hydra.sweep.dir
        if not os.path.isdir(sweep_dir):
            return
        runs = read_runs(sweep_dir)
        if not runs:
            log.warning("multirun summary: no job in %s wrote metrics.json", sweep_dir)
            return
        summary = summarise(runs, self.over)
        with open(os.path.join(sweep_dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        table = markdown(summary)
        with open(os.path.join(sweep_dir, "summary.md"), "w") as f:
            f.write(table)
        log.info("multirun summary over %s (%s/summary.json):\n%s", ", ".join(self.over), sweep_dir, table)
