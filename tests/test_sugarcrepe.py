"""SugarCrepe in its published layout (subset JSONs + COCO val2017 images): accuracies against hand-worked cosines
of a table model, against naive per-item loops of a real tiny model, from the config node, and on 2 gloo ranks."""

import json
import os

import pytest
import torch
from gloo import on_gloo_ranks
from helpers import tiny_clip_model
from hydra.utils import instantiate
from PIL import Image
from table_model import TableModel, cosine

from clip_train.config import check_keys
from clip_train.eval.sugarcrepe import SugarCrepeTask
from clip_train.eval.tasks import named_tasks, run_tasks

COLOURS = {"red": (200, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 200)}
TEXTS = {"a red cup": (1, 0, 0), "a green cup": (0, 1, 0), "a blue cup": (0, 0, 1), "a cup": (1, 1, 1),
         "a reddish cup": (1, 0, 0)}  # fmt: skip
# (image colour, caption, negative caption) per subset; keys as the benchmark writes them, not contiguous
SUBSETS = {
    "add_att": [("red", "a red cup", "a blue cup"), ("green", "a red cup", "a green cup"), ("blue", "a blue cup", "a cup")],
    "swap_obj": [("red", "a red cup", "a reddish cup"), ("blue", "a blue cup", "a green cup")],  # the first ties
}


def _coco_name(colour: str) -> str:
    return f"{8532 + list(COLOURS).index(colour):012d}.jpg"  # COCO's 12-digit names


def write_sugarcrepe(root) -> str:
    """ROOT/<subset>.json and ROOT/val2017/<COCO-style name>.jpg, as the benchmark's data/ and COCO lay them out."""
    os.makedirs(root / "val2017")
    for colour, rgb in COLOURS.items():
        Image.new("RGB", (24, 16), rgb).save(root / "val2017" / _coco_name(colour), quality=95)
    for subset, items in SUBSETS.items():
        entries = {
            str(3 * i + 1): {"filename": _coco_name(c), "caption": pos, "negative_caption": neg}
            for i, (c, pos, neg) in enumerate(items)
        }
        (root / f"{subset}.json").write_text(json.dumps(entries, indent=4))
    return str(root)


def test_accuracy_is_the_share_of_images_preferring_their_caption(tmp_path):
    root = write_sugarcrepe(tmp_path)
    got = SugarCrepeTask(root=root, subsets=list(SUBSETS), batch_size=2).run(TableModel(TEXTS), 0, 1)
    # by hand: add_att: red prefers red (1 > 0), green prefers green over red (wrong), blue: 1 > 1/sqrt(3)
    # swap_obj: "a reddish cup" embeds like "a red cup", a tie, counted wrong; blue prefers blue
    assert got == pytest.approx({"add_att": 2 / 3, "swap_obj": 1 / 2, "mean": (2 / 3 + 1 / 2) / 2})
    expected = {  # the same from the cosines written out (the JPEG colours are near, not exact)
        subset: sum(cosine(COLOURS[c], TEXTS[p]) > cosine(COLOURS[c], TEXTS[n]) + 1e-6 for c, p, n in items) / len(items)
        for subset, items in SUBSETS.items()
    }
    assert {k: got[k] for k in SUBSETS} == pytest.approx(expected)


@torch.no_grad()
def _naive(model, root: str) -> dict:
    """One item at a time: the image's bytes through the model's evaluation preprocessing, each caption alone."""
    result = {}
    for subset in SUBSETS:
        with open(os.path.join(root, f"{subset}.json")) as f:
            items = json.load(f).values()
        correct = 0
        for item in items:
            with open(os.path.join(root, "val2017", item["filename"]), "rb") as f:
                image = model.encode_pixels(model.preprocess_encoded(f.read())[None])[0]
            positive, negative = model.encode_text([item["caption"]])[0], model.encode_text([item["negative_caption"]])[0]
            correct += float(image @ positive) > float(image @ negative)
        result[subset] = correct / len(items)
    return result | {"mean": sum(result.values()) / len(result)}


def test_a_real_model_scores_as_the_naive_loop(tmp_path):
    root = write_sugarcrepe(tmp_path)
    model = tiny_clip_model()
    got = SugarCrepeTask(root=root, subsets=list(SUBSETS), batch_size=2).run(model, 0, 1)
    assert got == pytest.approx(_naive(model, root))


def test_the_config_node_runs_under_the_task_contract(compose_config, tmp_path):
    root = write_sugarcrepe(tmp_path / "sc")
    cfg = compose_config(
        "checkpoint=run.ckpt", "eval=none", "~eval.tasks.retrieval", "+eval/task@eval.tasks.sugarcrepe=sugarcrepe",
        f"eval.tasks.sugarcrepe.root={root}", "eval.tasks.sugarcrepe.subsets=[add_att,swap_obj]", config_name="evaluate",
    )  # fmt: skip
    check_keys(cfg)
    tasks = named_tasks(instantiate(cfg.eval.tasks, _convert_="partial"))
    assert set(tasks) == {"sugarcrepe"}
    metrics = run_tasks(tasks, TableModel(TEXTS), 0, 1)
    assert metrics == pytest.approx({"sugarcrepe/add_att": 2 / 3, "sugarcrepe/swap_obj": 1 / 2, "sugarcrepe/mean": 7 / 12})


def test_bad_input_is_named(tmp_path):
    root = write_sugarcrepe(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"add_obj\.json is missing"):
        SugarCrepeTask(root=root).run(TableModel(TEXTS), 0, 1)
    (tmp_path / "add_att.json").write_text(json.dumps({"7": {"filename": "x.jpg", "caption": "a red cup"}}))
    with pytest.raises(ValueError, match=r"add_att\.json: item '7' has no negative_caption"):
        SugarCrepeTask(root=root, subsets=["add_att"]).run(TableModel(TEXTS), 0, 1)
    with pytest.raises(ValueError, match="no subset 'add_attribute'"):
        SugarCrepeTask(root=root, subsets=["add_attribute"])
    with pytest.raises(ValueError, match="needs a root"):
        SugarCrepeTask()


def _rank_metrics(rank: int, world: int, root: str) -> dict:
    torch.set_num_threads(1)
    return SugarCrepeTask(root=root, subsets=list(SUBSETS), batch_size=1).run(TableModel(TEXTS), rank, world)


@pytest.mark.slow
def test_three_ranks_sum_their_shares_like_one_process(tmp_path):
    root = write_sugarcrepe(tmp_path / "sc")  # swap_obj's 2 items over 3 ranks: rank 2 scores none of them
    expected = SugarCrepeTask(root=root, subsets=list(SUBSETS)).run(TableModel(TEXTS), 0, 1)
    for got in on_gloo_ranks(_rank_metrics, 3, tmp_path, root):
        assert got == pytest.approx(expected)
