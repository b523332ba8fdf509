"""The linear probe: a tiny separable ImageFolder pair worked by hand, the weight decay chosen on the validation
split (checked against a brute-force sweep of the grid), the config node, bad input, and 2 gloo ranks."""

import os

import pytest
import torch
from gloo import on_gloo_ranks
from hydra.utils import instantiate
from PIL import Image
from table_model import TableModel

from clip_train.config import check_keys
from clip_train.eval.linear_probe import LinearProbeTask, validation_split
from clip_train.eval.logistic_regression import WEIGHT_DECAY_GRID, choose_weight_decay, fit, top1
from clip_train.eval.tasks import named_tasks, run_tasks

CLASSES = {"blue": (0, 0, 1), "cyan": (0, 1, 1), "green": (0, 1, 0), "red": (1, 0, 0), "yellow": (1, 1, 0)}
# by hand: 5 points in convex position on the sphere, so every class is linearly separable; the test split holds
# 2 images of each class plus a red image filed under blue: it is classified red, so top-1 is 10/11, top-5 1,
# blue's recall 2/3 and the mean per-class recall (4 + 2/3) / 5
EXPECTED = {"top1": 10 / 11, "top5": 1.0, "mean_per_class_recall": (4 + 2 / 3) / 5}


def _image(path, rgb, shade: int) -> None:
    Image.new("RGB", (8, 8), tuple(235 * v + shade for v in rgb)).save(path)


def write_folders(root) -> str:
    """ROOT/train/<class>/ (6 shades each) and ROOT/test/<class>/ (2 each, and a red one in blue/)."""
    for split, shades in (("train", range(0, 18, 3)), ("test", (1, 10))):
        for name, rgb in CLASSES.items():
            os.makedirs(root / split / name)
            for shade in shades:
                _image(root / split / name / f"{shade:02d}.png", rgb, shade)
    _image(root / "test" / "blue" / "zz_red.png", CLASSES["red"], 5)
    return str(root)


def test_a_separable_set_scores_as_worked_by_hand(tmp_path):
    root = write_folders(tmp_path)
    got = LinearProbeTask(root=root, batch_size=7).run(TableModel({}), 0, 1)
    assert {k: got[k] for k in EXPECTED} == pytest.approx(EXPECTED)
    assert got["weight_decay"] in WEIGHT_DECAY_GRID
    three = LinearProbeTask(train=f"{root}/train", test=f"{root}/test")  # the two-folder form, here with no top5:
    for name in ("cyan", "yellow"):  # with 3 classes
        for split in ("train", "test"):
            os.rename(f"{root}/{split}/{name}", f"{tmp_path}/{split}_{name}")
    assert three.run(TableModel({}), 0, 1).keys() == {"top1", "mean_per_class_recall", "weight_decay"}


def test_the_weight_decay_is_the_one_the_validation_split_prefers():
    # one feature: 8 of class 0 at -1, 2 of class 1 at +1. Strong decay shrinks the weight until the bias
    # (the prior, 8 : 2) decides, so +1 becomes class 0; weak decay keeps +1 class 1.
    train = (torch.tensor([[-1.0]] * 8 + [[1.0]] * 2), torch.tensor([0] * 8 + [1] * 2))
    for validation_label in (0, 1):
        validation = (torch.tensor([[1.0]] * 3), torch.tensor([validation_label] * 3))
        chosen, tried = choose_weight_decay(train, validation, 2)
        sweep = [top1(fit(*train, 2, wd), *validation) for wd in WEIGHT_DECAY_GRID]  # brute force, every value
        best = max(sweep)
        assert best == 1.0 and tried[chosen] == 1.0
        assert chosen == WEIGHT_DECAY_GRID[sweep.index(best)]  # the smallest value with the best validation top-1
        if validation_label == 1:
            assert chosen == WEIGHT_DECAY_GRID[0]
        else:
            assert 1e-3 < chosen < WEIGHT_DECAY_GRID[-1] and sweep[0] == 0.0
        assert len(tried) < 20  # the coarse-then-refine search, not the sweep


def test_the_validation_split_is_a_seeded_fifth_of_the_training_set():
    kept, held = validation_split(30, 0.2, seed=3)
    assert len(held) == 6 and sorted(kept.tolist() + held.tolist()) == list(range(30))
    assert torch.equal(held, validation_split(30, 0.2, seed=3)[1])
    assert not torch.equal(held, validation_split(30, 0.2, seed=4)[1])


def test_the_config_node_runs_under_the_task_contract(compose_config, tmp_path):
    root = write_folders(tmp_path / "lp")
    cfg = compose_config(
        "checkpoint=run.ckpt", "eval=none", "~eval.tasks.retrieval", "+eval/task@eval.tasks.linear_probe=linear_probe",
        f"eval.tasks.linear_probe.root={root}", config_name="evaluate",
    )  # fmt: skip
    check_keys(cfg)
    tasks = named_tasks(instantiate(cfg.eval.tasks, _convert_="partial"))
    metrics = run_tasks(tasks, TableModel({}), 0, 1)
    assert {k: metrics[f"linear_probe/{k}"] for k in EXPECTED} == pytest.approx(EXPECTED)


def test_bad_input_is_named(tmp_path):
    with pytest.raises(ValueError, match="needs a root with train/ and test/"):
        LinearProbeTask(train=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"train folder '.*/train' is not a folder"):
        LinearProbeTask(root=str(tmp_path)).run(TableModel({}), 0, 1)
    root = write_folders(tmp_path / "lp")
    os.rename(f"{root}/test/cyan", f"{root}/test/teal")
    with pytest.raises(ValueError, match="class folders of .*/test differ from those of .*/train"):
        LinearProbeTask(root=root).run(TableModel({}), 0, 1)


def _rank_metrics(rank: int, world: int, root: str) -> dict:
    return LinearProbeTask(root=root, batch_size=2).run(TableModel({}), rank, world)


@pytest.mark.slow
def test_two_ranks_gather_the_features_and_fit_alike(tmp_path):
    root = write_folders(tmp_path / "lp")  # 11 test images: rank 0 encodes 6, rank 1 encodes 5
    one = _rank_metrics(0, 1, root)
    for got in on_gloo_ranks(_rank_metrics, 2, tmp_path, root):
        assert got == pytest.approx(one)
