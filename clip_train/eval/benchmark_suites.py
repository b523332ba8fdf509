"""Benchmark suites: the sets of one suite found under a folder, each a `BenchmarkFolderTask`, and the suite's score.

    python -m clip_train.evaluate checkpoint=CKPT benchmark=datacomp benchmark.root=DIR

Suites (`benchmark=`):

- `all`: every folder under `root`, at any depth, in CLIP_benchmark's webdataset layout
  (`clip_train.eval.wds_benchmark`), whatever its name; reported as `benchmark/<folder>/<metric>`.
- `datacomp`: DataComp's evaluation suite (`benchmark_data/datacomp_tasks.tsv`, from its `tasklist.yml`),
  each task whose folder is present (`wds_<task>_test`, as DataComp's `download_evalsets.py` names them,
  or CLIP_benchmark's `wds_<task>`); reported as `benchmark/<task>/<metric>` with the metric DataComp
  takes for it as `datacomp/<task>`, and `datacomp/average` over the tasks present. DataComp's average
  is over its 38 tasks: compare averages only over the same tasks.
- `imagenet_dist`: ImageNet-1k and the distribution shifts DataComp groups with it (V2, Sketch, A, O, R,
  ObjectNet); `imagenet_dist/average` is over the shifts.
- `retrieval`: Flickr30k and MSCOCO (5k) retrieval, scored by DataComp's mean of both directions' R@1.
- `compositional`: SugarCrepe, Winoground and ARO in their published layouts, in `sugarcrepe/`, `winoground/`
  and `aro/` under `root` (ARO's order sets from `aro/coco/` and `aro/flickr30k/` when present); reported as
  each paper scores them (`clip_train.eval.sugarcrepe`, `winoground`, `aro`): `compositional/sugarcrepe` (the
  mean over its subsets), `compositional/winoground_{text,image,group}`, `compositional/aro_<set>`.

A task whose metric needs more than labels (WinoGAViL's Jaccard score, the WILDS and fairness groups'
worst-group and F1 scores) is listed as unsupported and left out; absent tasks are listed too.
"""

import logging
import os
from dataclasses import dataclass

from clip_train.eval.imagenet import data_lines
from clip_train.eval.wds_benchmark import BenchmarkFolderTask, is_benchmark_folder

log = logging.getLogger(__name__)

# DataComp's metric name -> how it is read from our task's metrics
MAIN_METRICS = {
    "acc1": lambda m: m["top1"],
    "mean_per_class_recall": lambda m: m["mean_per_class_recall"],
    "mean_recall@1": lambda m: (m["image_to_text_R@1"] + m["text_to_image_R@1"]) / 2,
}
UNSUPPORTED_GROUPS = ("fairness/", "wilds/", "misc/")  # labels beyond one class per image
IMAGENET_SHIFTS = ("imagenetv2", "imagenet_sketch", "imagenet-a", "imagenet-o", "imagenet-r", "objectnet")


@dataclass(frozen=True)
class SuiteTask:
    """One task of a suite: its name (DataComp's key), the folder names it may have, and the metric it is scored by."""

    name: str
    folders: tuple[str, ...]
    metric: str


def datacomp_tasks() -> list[SuiteTask]:
    tasks = []
    for line in data_lines("datacomp_tasks.tsv"):
        name, folders, metric, _ = line.split("\t")
        alternatives = folders.split("|")
        alternatives += [folder.removesuffix("_test") for folder in alternatives if folder.endswith("_test")]
        tasks.append(SuiteTask(name, tuple(alternatives), metric))
    return tasks


def suite_tasks(suite: str) -> list[SuiteTask]:
    """The tasks of a named suite (not `all`, which has none fixed)."""
    tasks = datacomp_tasks()
    if suite == "datacomp":
        return tasks
    if suite == "imagenet_dist":
        return [task for task in tasks if task.name in ("imagenet1k", *IMAGENET_SHIFTS)]
    if suite == "retrieval":
        return [task for task in tasks if task.name.startswith("retrieval/")]
    raise ValueError(f"benchmark.suite={suite!r}: choose all, datacomp, imagenet_dist, retrieval or compositional")


def benchmark_folders(root: str) -> list[str]:
    """Every folder under `root` (itself included) in CLIP_benchmark's layout, as paths relative to `root`."""
    found = []
    for folder, subfolders, _ in os.walk(root):
        if is_benchmark_folder(folder):
            found.append(os.path.relpath(folder, root))
            subfolders.clear()  # a set's own test/ and train/ are no further sets
    return sorted(found)


# compositional sets: folder under root, the file that marks it, its task, and the metrics the summary shows
COMPOSITIONAL = {
    "sugarcrepe": ("add_att.json", "mean"),
    "winoground": ("examples.jsonl", "text", "image", "group"),
    "aro": ("visual_genome_relation.json", "vg_relation", "vg_attribution", "coco_order", "flickr_order"),
}


def compositional_tasks(root: str, options: dict) -> tuple[dict, list[str]]:
    """({`benchmark/<set>`: task} of the compositional sets present under `root`, the names of the absent ones)."""
    from clip_train.eval.aro import AroTask
    from clip_train.eval.sugarcrepe import SugarCrepeTask
    from clip_train.eval.winoground import WinogroundTask

    tasks, absent = {}, []
    for name, (marker, *_) in COMPOSITIONAL.items():
        folder = os.path.join(root, name)
        if not os.path.isfile(os.path.join(folder, marker)):
            absent.append(name)
        elif name == "sugarcrepe":
            tasks[f"benchmark/{name}"] = SugarCrepeTask(root=folder, **options)
        elif name == "winoground":
            tasks[f"benchmark/{name}"] = WinogroundTask(root=folder, **options)
        else:
            order_sets = (("coco_root", "coco", "coco_karpathy_test.json"), ("flickr_root", "flickr30k", "flickr30k_test.json"))
            order = {
                key: os.path.join(folder, sub)
                for key, sub, marker in order_sets
                if os.path.isfile(os.path.join(folder, sub, marker))
            }
            tasks[f"benchmark/{name}"] = AroTask(root=folder, **order, **options)
    return tasks, absent


def _task_metrics(metrics: dict, prefix: str) -> dict:
    return {key[len(prefix) :]: value for key, value in metrics.items() if key.startswith(prefix)}


class BenchmarkSuite:
    """The tasks of `suite` present under `root`, named `benchmark/<name>`, and the suite's summary.

    batch_size, num_workers, progress: each task's shard loader and progress bar.
    """

    def __init__(self, suite: str, root: str, batch_size: int = 128, num_workers: int = 0, progress: bool = False):
        if not os.path.isdir(root):
            raise FileNotFoundError(f"benchmark.root={root} is not a folder")
        self.suite, self.root = suite, root
        options = {"batch_size": batch_size, "num_workers": num_workers, "progress": progress}
        self.metrics: dict[str, str] = {}  # task name -> its main metric
        self.tasks: dict[str, BenchmarkFolderTask] = {}
        self.absent, self.unsupported = [], []
        if suite == "compositional":
            self.tasks, self.absent = compositional_tasks(root, options)
            if not self.tasks:
                raise ValueError(
                    f"benchmark=compositional: none of {', '.join(f'{n}/' for n in COMPOSITIONAL)} is under {root}"
                )
            return
        if suite == "all":
            for folder in benchmark_folders(root):
                self.tasks[f"benchmark/{folder}"] = BenchmarkFolderTask(os.path.join(root, folder), **options)
            if not self.tasks:
                raise ValueError(f"benchmark.root={root} holds no folder in CLIP_benchmark's layout (NAME/test/nshards.txt)")
            return
        for task in suite_tasks(suite):
            folder = next((os.path.join(root, f) for f in task.folders if is_benchmark_folder(os.path.join(root, f))), None)
            if folder is None:
                self.absent.append(task.name)
            elif task.metric not in MAIN_METRICS or task.name.startswith(UNSUPPORTED_GROUPS):
                self.unsupported.append(task.name)
            else:
                self.tasks[f"benchmark/{task.name}"] = BenchmarkFolderTask(folder, **options)
                self.metrics[task.name] = task.metric
        log.info("benchmark=%s: %d tasks under %s; absent: %s; unsupported (metric beyond labels): %s", suite,
                 len(self.tasks), root, ", ".join(self.absent) or "none", ", ".join(self.unsupported) or "none")  # fmt: skip
        if not self.tasks:
            raise ValueError(
                f"benchmark={suite}: none of its task folders is under {root} (e.g. {suite_tasks(suite)[0].folders[0]})"
            )

    def summary(self, metrics: dict) -> dict[str, float]:
        """`<suite>/<task>`: each task's main metric, and `<suite>/average` over the tasks present (for
        `imagenet_dist`, over the distribution shifts); for `compositional`, each set's own scores and no average
        (they have different chance levels); {} for `all`, which has no suite metric."""
        if self.suite == "compositional":
            return {f"compositional/{name}" + ("" if len(keys) == 1 else f"_{key}"): metrics[f"benchmark/{name}/{key}"]
                    for name, (_, *keys) in COMPOSITIONAL.items() for key in keys
                    if f"benchmark/{name}/{key}" in metrics}  # fmt: skip
        scores = {
            name: MAIN_METRICS[metric](_task_metrics(metrics, f"benchmark/{name}/")) for name, metric in self.metrics.items()
        }
        averaged = [score for name, score in scores.items() if self.suite != "imagenet_dist" or name in IMAGENET_SHIFTS]
        summary = {f"{self.suite}/{name}": score for name, score in scores.items()}
        if averaged:
            summary[f"{self.suite}/average"] = sum(averaged) / len(averaged)
        return summary
