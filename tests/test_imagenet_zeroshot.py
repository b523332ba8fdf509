"""ImageNet zero-shot with one key: the bundled class names and prompts, its folder layouts, and
`eval.zeroshot.NAME=ROOT` composed into a task node."""

import os

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image
from table_model import TableModel

from clip_train.eval.imagenet import imagenet_classes, imagenet_names
from clip_train.eval.tasks import named_tasks
from clip_train.eval.zeroshot import TEMPLATE_SETS, ZeroShotTask
from clip_train.eval.zeroshot_sets import add_zeroshot_sets
from clip_train.paths import CONFIG_DIR

# three ImageNet classes, each with the colour its fake text embedding has
CLASSES = {
    "n01440764": ("tench", (220, 30, 30)),
    "n01443537": ("goldfish", (30, 200, 30)),
    "n01484850": ("great white shark", (30, 30, 220)),
}


class PromptRecordingModel(TableModel):
    """`TableModel` (an image is its normalised mean RGB) whose prompt embedding is the colour of the one class name
    the prompt holds (by `CLASSES`); every prompt encoded is recorded."""

    def __init__(self):
        super().__init__({})
        self.prompts = []

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        self.prompts += prompts
        rgb = [next(colour for name, colour in CLASSES.values() if name in prompt) for prompt in prompts]
        return torch.nn.functional.normalize(torch.tensor(rgb, dtype=torch.float32), dim=-1)


def _synset_folders(root, colours: dict[str, list[tuple[int, int, int]]]) -> str:
    for wnid, images in colours.items():
        os.makedirs(root / wnid)
        for index, colour in enumerate(images):
            Image.new("RGB", (8, 8), colour).save(root / wnid / f"ILSVRC2012_val_{index:08d}.JPEG", format="JPEG", quality=100)
    return str(root)


def test_bundled_classes_and_prompts_are_imagenets():
    wnids, names = imagenet_classes()
    assert len(wnids) == len(names) == 1000 == len(set(wnids)) and list(wnids) == sorted(wnids)
    assert (wnids[0], names[0]) == ("n01440764", "tench") and (wnids[999], names[999]) == ("n15075141", "toilet paper")
    assert len(TEMPLATE_SETS["openai_imagenet"]) == 80 and len(TEMPLATE_SETS["simple_imagenet"]) == 7
    assert all(template.count("{}") == 1 for templates in TEMPLATE_SETS.values() for template in templates)


def test_imagenet_layouts_name_their_classes():
    wnids, names = imagenet_classes()
    assert imagenet_names(list(wnids)) == list(names)  # val and Sketch
    subset = [wnids[i] for i in (1, 7, 999)]  # a 200-class set (A, R) has a subset of the synsets
    assert imagenet_names(subset) == [names[1], names[7], names[999]]
    v2 = sorted(str(i) for i in range(1000))  # ImageNetV2: folders by class index, sorted as strings
    assert imagenet_names(v2)[:3] == [names[0], names[1], names[10]]
    assert imagenet_names(["0", "1", "2"]) is None  # a digit-named set of three classes is no ImageNet
    assert imagenet_names(["n01440764", "n99999999"]) is None and imagenet_names(["cat", "dog"]) is None


def test_synset_folders_are_scored_with_openai_names_and_80_prompts(tmp_path):
    # the second tench image is green: it goes to goldfish, so top-1 is 3/4, tench's recall 1/2
    (red, _), (green, _), (blue, _) = ((c, n) for n, c in CLASSES.values())
    root = _synset_folders(tmp_path / "val", {"n01440764": [red, green], "n01443537": [green], "n01484850": [blue]})
    model = PromptRecordingModel()
    result = ZeroShotTask(root=root).run(model, 0, 1)
    names = [name for name, _ in CLASSES.values()]
    assert sorted(model.prompts) == sorted(t.format(n) for n in names for t in TEMPLATE_SETS["openai_imagenet"])
    assert result["top1"] == pytest.approx(3 / 4) and result["top5"] == 1.0
    assert result["per_class"] == {"tench": 0.5, "goldfish": 1.0, "great white shark": 1.0}
    assert result["mean_per_class_recall"] == pytest.approx((0.5 + 1 + 1) / 3)
    model.prompts.clear()
    ZeroShotTask(root=root, templates="simple_imagenet").run(model, 0, 1)
    assert len(model.prompts) == 3 * 7


def _evaluate_config(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("evaluate", overrides=["checkpoint=unused", "eval=none", *overrides])


def test_one_key_adds_a_zero_shot_set_as_its_task_node_would(tmp_path):
    cfg = _evaluate_config(
        "eval.zeroshot.imagenet=/data/imagenet/val",
        "eval.zeroshot.imagenet_r={root: /data/r, templates: simple_imagenet}",
        "+eval.zeroshot.mine=/data/mine",
    )
    assert add_zeroshot_sets(cfg.eval) == ["imagenet", "imagenet_r", "mine"]
    tasks = named_tasks(instantiate(cfg.eval.tasks, _convert_="partial"))
    assert set(tasks) == {
        "zeroshot/imagenet",
        "zeroshot/imagenet_r",
        "zeroshot/mine",
        "retrieval",
    }  # evaluate always has retrieval
    assert tasks["zeroshot/imagenet"] == ZeroShotTask(root="/data/imagenet/val", cache_dir=tasks["zeroshot/imagenet"].cache_dir,
                                                      batch_size=128, num_workers=2, progress=True)  # fmt: skip
    assert tasks["zeroshot/imagenet_r"].templates == "simple_imagenet"

    with pytest.raises(ValueError, match=r"eval.zeroshot.imagenet sets \['template'\]"):
        add_zeroshot_sets(_evaluate_config("eval.zeroshot.imagenet={root: /x, template: simple}").eval)
    twice = _evaluate_config("eval=synthetic", "+eval.zeroshot.shapes=/x")
    with pytest.raises(ValueError, match="eval.zeroshot.shapes and eval.tasks.zeroshot.shapes"):
        add_zeroshot_sets(twice.eval)


@pytest.mark.slow
def test_one_key_adds_a_zero_shot_set_to_training_validation(tmp_path, compose_config):
    from clip_train.train import run

    (red, _), (green, _), (blue, _) = ((c, n) for n, c in CLASSES.values())
    root = _synset_folders(tmp_path / "val", {"n01440764": [red, green], "n01443537": [green], "n01484850": [blue]})
    metrics = run(compose_config("debug=fast", "logger=[]", f"eval.zeroshot.imagenet={root}"))
    assert 0 <= metrics["zeroshot/imagenet/top1"] <= 1 and "zeroshot/imagenet/mean_per_class_recall" in metrics
    assert "zeroshot/shapes/top1" in metrics  # on the embedded data the drawn sets stay
