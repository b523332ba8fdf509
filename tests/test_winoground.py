"""Winoground in the layout its dataset ships (examples.jsonl + images/): text, image and group scores against
the paper's definitions worked by hand on a table model, a naive loop of a real tiny model, the config node,
and 2 gloo ranks."""

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
from clip_train.eval.tasks import named_tasks, run_tasks
from clip_train.eval.winoground import WinogroundTask

RGB = {"red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1)}
# (image_0 colour, image_1 colour, caption_0 vector, caption_1 vector), worked by hand below
EXAMPLES = [
    ("red", "blue", (1, 0, 0), (0, 0, 1)),  # all right
    ("red", "green", (1, 1, 0), (0, 1, 0)),  # each image prefers its caption; caption_0 ties between the images
    ("blue", "green", (1, 0, 0.5), (0, 2, 1.5)),  # each caption prefers its image; image_0 prefers caption_1
    ("green", "blue", (0, 1, 1), (0, 0, 1)),  # each image prefers its caption; caption_0 ties between the images
]
SCORES = {"text": 3 / 4, "image": 2 / 4, "group": 1 / 4}
TEXTS = {f"caption {k} {c}": vectors[2 + c] for k, vectors in enumerate(EXAMPLES) for c in (0, 1)}


def write_winoground(root) -> str:
    """ROOT/examples.jsonl and ROOT/images/ex_<k>_img_<i>.png, the dataset's data/ with images.zip unpacked."""
    os.makedirs(root / "images")
    lines = []
    for k, (colour_0, colour_1, _, _) in enumerate(EXAMPLES):
        for i, colour in enumerate((colour_0, colour_1)):
            Image.new("RGB", (20, 12), tuple(255 * v for v in RGB[colour])).save(root / "images" / f"ex_{k}_img_{i}.png")
        lines.append(json.dumps({
            "id": k, "image_0": f"ex_{k}_img_0", "image_1": f"ex_{k}_img_1", "caption_0": f"caption {k} 0",
            "caption_1": f"caption {k} 1", "tag": "Object", "secondary_tag": "", "num_main_preds": 1,
            "collapsed_tag": "Object",
        }))  # fmt: skip
    (root / "examples.jsonl").write_text("\n".join(lines) + "\n")
    return str(root)


def _definitions(s) -> tuple[bool, bool, bool]:
    """The paper's scores of one example, s(c, i) a function of caption and image index."""
    text = s(0, 0) > s(1, 0) and s(1, 1) > s(0, 1)
    image = s(0, 0) > s(0, 1) and s(1, 1) > s(1, 0)
    return text, image, text and image


def test_scores_follow_the_papers_definitions(tmp_path):
    root = write_winoground(tmp_path)
    got = WinogroundTask(root=root, batch_size=3).run(TableModel(TEXTS), 0, 1)
    assert got == pytest.approx(SCORES)  # worked by hand in EXAMPLES
    passed = [_definitions(lambda c, i, e=e: cosine(e[2 + c], RGB[e[i]])) for e in EXAMPLES]  # the cosines written out
    assert got == pytest.approx({name: sum(p[n] for p in passed) / 4 for n, name in enumerate(("text", "image", "group"))})


@torch.no_grad()
def _naive(model, root: str) -> dict:
    passed = []
    with open(os.path.join(root, "examples.jsonl")) as f:
        for line in f:
            example = json.loads(line)
            images = []
            for i in (0, 1):
                with open(os.path.join(root, "images", example[f"image_{i}"] + ".png"), "rb") as image:
                    images.append(model.encode_pixels(model.preprocess_encoded(image.read())[None])[0])
            captions = [model.encode_text([example[f"caption_{c}"]])[0] for c in (0, 1)]
            passed.append(_definitions(lambda c, i, captions=captions, images=images: float(captions[c] @ images[i])))
    return {name: sum(p[n] for p in passed) / len(passed) for n, name in enumerate(("text", "image", "group"))}


def test_a_real_model_scores_as_the_naive_loop(tmp_path):
    root = write_winoground(tmp_path)
    model = tiny_clip_model()
    assert WinogroundTask(root=root, batch_size=4).run(model, 0, 1) == pytest.approx(_naive(model, root))


def test_the_config_node_runs_under_the_task_contract(compose_config, tmp_path):
    root = write_winoground(tmp_path / "wg")
    cfg = compose_config(
        "checkpoint=run.ckpt", "eval=none", "~eval.tasks.retrieval", "+eval/task@eval.tasks.winoground=winoground",
        f"eval.tasks.winoground.root={root}", config_name="evaluate",
    )  # fmt: skip
    check_keys(cfg)
    tasks = named_tasks(instantiate(cfg.eval.tasks, _convert_="partial"))
    metrics = run_tasks(tasks, TableModel(TEXTS), 0, 1)
    assert metrics == pytest.approx({f"winoground/{name}": value for name, value in SCORES.items()})


def test_bad_input_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"examples\.jsonl is missing"):
        WinogroundTask(root=str(tmp_path)).run(TableModel(TEXTS), 0, 1)
    (tmp_path / "examples.jsonl").write_text('{"id": 0, "image_0": "a", "image_1": "b", "caption_0": "x"}\n')
    with pytest.raises(ValueError, match=r"examples\.jsonl, line 1: no caption_1"):
        WinogroundTask(root=str(tmp_path)).run(TableModel(TEXTS), 0, 1)
    with pytest.raises(ValueError, match="needs a root"):
        WinogroundTask()


def _rank_metrics(rank: int, world: int, root: str) -> dict:
    return WinogroundTask(root=root, batch_size=1).run(TableModel(TEXTS), rank, world)


@pytest.mark.slow
def test_two_ranks_sum_their_shares_like_one_process(tmp_path):
    root = write_winoground(tmp_path / "wg")  # rank 0 scores examples 0 and 2, rank 1 examples 1 and 3
    for got in on_gloo_ranks(_rank_metrics, 2, tmp_path, root):
        assert got == pytest.approx(SCORES)
