"""Zero-shot sets by one key: `eval.zeroshot.NAME=ROOT` becomes the task node `eval.tasks.zeroshot.NAME`.

The node is `configs/eval/task/zeroshot.yaml` with `root` set, so a set added this way reads its
images, names and prompts exactly as one added with `+eval/task@eval.tasks.zeroshot.NAME=zeroshot`.
Other keys of the node come with the root as a mapping:
`eval.zeroshot.imagenet='{root: /data/imagenet/val, templates: simple_imagenet}'`.
`configs/eval/zeroshot/imagenet.yaml` names ImageNet's sets, all off (null).
"""

import os

from omegaconf import DictConfig, OmegaConf, open_dict

from clip_train.paths import CONFIG_DIR

ZEROSHOT_NODE = os.path.join(CONFIG_DIR, "eval", "task", "zeroshot.yaml")


def add_zeroshot_sets(eval_cfg: DictConfig) -> list[str]:
    """Add a zero-shot task under `eval_cfg.tasks.zeroshot` for every set of `eval_cfg.zeroshot` that is given
    a root or a mapping of the task's keys (in place); returns their names. A name `eval.tasks.zeroshot`
    already has is refused: two configurations of one set would leave which one counts to key order."""
    given = {name: value for name, value in (eval_cfg.get("zeroshot") or {}).items() if value is not None}
    if not given:
        return []
    with open_dict(eval_cfg):
        if not eval_cfg.get("tasks"):
            eval_cfg.tasks = {}
    tasks = eval_cfg.tasks
    with open_dict(tasks):
        if not tasks.get("zeroshot"):
            tasks.zeroshot = {}
    for name, value in given.items():
        if name in tasks.zeroshot:
            raise ValueError(f"eval.zeroshot.{name} and eval.tasks.zeroshot.{name} both name a zero-shot set {name}: keep one")
        keys = value if isinstance(value, DictConfig) else {"root": value}
        node = OmegaConf.merge(OmegaConf.load(ZEROSHOT_NODE), keys)
        unknown = set(node) - set(OmegaConf.load(ZEROSHOT_NODE))
        if unknown:
            raise ValueError(
                f"eval.zeroshot.{name} sets {sorted(unknown)}, which a zero-shot task has not (configs/eval/task/zeroshot.yaml)"
            )
        with open_dict(tasks.zeroshot):
            tasks.zeroshot[name] = node
    return sorted(given)
