"""Benchmark sets in CLIP_benchmark's webdataset layout (written here as its `webdataset_builder` writes them:
webdataset's ShardWriter, `s%07d` keys, `cls` or multi-line `txt`, `nshards.txt`), the suites over a folder of
them, and evaluate's table over several checkpoints."""

import csv
import json
import os

import pytest
import torch
from benchmark_sets import (
    COLOURS,
    RETRIEVAL_CAPTIONS,
    RETRIEVAL_COLOURS,
    TEMPLATES,
    image_bytes,
    write_classification,
    write_retrieval,
)
from helpers import tiny_clip_model
from hydra import compose, initialize_config_dir
from PIL import Image

from clip_train.eval.benchmark_suites import BenchmarkSuite, benchmark_folders
from clip_train.eval.tasks import run_tasks
from clip_train.eval.wds_benchmark import BenchmarkFolderTask
from clip_train.evaluate import run as evaluate
from clip_train.export import main as export_main
from clip_train.paths import CONFIG_DIR


@torch.no_grad()
def _naive_top1(model, root: str, labels: list[int]) -> tuple[float, float]:
    """Top-1 and mean per-class recall with a class weight built prompt by prompt: the mean of the unit text
    embeddings of each class's prompts, renormalised; images one at a time."""
    weights = []
    for name in COLOURS:
        prompts = torch.cat([model.encode_text([template.replace("{c}", name)]) for template in TEMPLATES])
        weights.append(torch.nn.functional.normalize(prompts.mean(dim=0), dim=0))
    weights = torch.stack(weights)
    hits = {label: [] for label in set(labels)}
    for index, label in enumerate(labels):
        extension = ("webp", "png", "jpg")[index % 3]
        pixels = model.preprocess_encoded(image_bytes(COLOURS[label], index, extension))[None]
        feature = model.encode_pixels(pixels)[0]
        hits[label].append(float(int((weights @ feature).argmax()) == label))
    top1 = sum(sum(h) for h in hits.values()) / len(labels)
    return top1, sum(sum(h) / len(h) for h in hits.values()) / len(hits)


def test_a_classification_folder_scores_as_a_prompt_by_prompt_reference(tmp_path):
    labels = [0, 1, 2, 3, 0, 1, 2, 0, 0, 3]  # unequal classes: mean per-class recall differs from top-1
    root = write_classification(tmp_path / "wds_cifar4", labels)
    model = tiny_clip_model()
    got = BenchmarkFolderTask(root, batch_size=4).run(model, 0, 1)
    top1, balanced = _naive_top1(model, root, labels)
    assert got["top1"] == pytest.approx(top1) and got["mean_per_class_recall"] == pytest.approx(balanced)
    assert got["top5"] == 1.0  # 4 classes


def test_a_retrieval_folder_scores_as_a_caption_by_caption_reference(tmp_path):
    root = write_retrieval(tmp_path / "wds_flickr30k", RETRIEVAL_CAPTIONS, RETRIEVAL_COLOURS)
    model = tiny_clip_model()
    got = BenchmarkFolderTask(root).run(model, 0, 1)
    with torch.no_grad():  # one image and one caption at a time; an image hits if any of its captions ranks first
        images = torch.cat([model.encode_pixels(model.preprocess_encoded(image_bytes(c, i, "jpg"))[None])
                            for i, c in enumerate(RETRIEVAL_COLOURS)])  # fmt: skip
        texts = [
            (owner, model.encode_text([caption])[0]) for owner, lines in enumerate(RETRIEVAL_CAPTIONS) for caption in lines
        ]
    owners, text_features = torch.tensor([o for o, _ in texts]), torch.stack([t for _, t in texts])
    image_hits = [float(owners[int((text_features @ image).argmax())] == i) for i, image in enumerate(images)]
    text_hits = [float(int((images @ text).argmax()) == owner) for owner, text in texts]
    assert got["image_to_text_R@1"] == pytest.approx(sum(image_hits) / len(image_hits))
    assert got["text_to_image_R@1"] == pytest.approx(sum(text_hits) / len(text_hits))
    assert 0 < got["text_to_image_R@1"] < 1  # the random model gets some right, not all: the comparison has teeth


def test_bad_folders_fail_naming_what_is_wrong(tmp_path):
    root = write_classification(tmp_path / "set", [0, 1, 2, 3])
    (tmp_path / "set" / "dataset_type.txt").write_text("multilabel\n")
    with pytest.raises(ValueError, match="says 'multilabel'"):
        BenchmarkFolderTask(root)
    os.remove(tmp_path / "set" / "dataset_type.txt")
    (tmp_path / "set" / "test" / "nshards.txt").write_text("3\n")  # 2 shards of 3 were written
    with pytest.raises(FileNotFoundError, match="2.tar"):
        BenchmarkFolderTask(root)


def _suite_root(tmp_path) -> str:
    root = tmp_path / "datacomp_eval"
    write_classification(root / "wds_cifar10_test", [0, 1, 2, 3, 0, 1])
    write_classification(root / "wds_vtab-caltech101_test", [0, 0, 0, 1, 2, 3, 3])
    write_retrieval(root / "wds_flickr30k", RETRIEVAL_CAPTIONS, RETRIEVAL_COLOURS)  # CLIP_benchmark's name
    write_classification(root / "wds_fairface_test", [0, 1])  # its score needs demographic groups
    write_classification(root / "more" / "nested" / "mine", [2, 3])  # any name, any depth: only `all` takes it
    return str(root)


def test_datacomp_suite_takes_the_tasks_present_with_datacomps_metrics(tmp_path):
    root = _suite_root(tmp_path)
    suite = BenchmarkSuite("datacomp", root)
    flickr = "retrieval/flickr_1k_test_image_text_retrieval"
    assert set(suite.tasks) == {"benchmark/cifar10", "benchmark/vtab/caltech101", f"benchmark/{flickr}"}
    assert suite.unsupported == ["fairness/fairface"] and "imagenet1k" in suite.absent and len(suite.absent) == 36
    metrics = run_tasks(suite.tasks, tiny_clip_model(), 0, 1)
    summary = suite.summary(metrics)
    expected = {
        "datacomp/cifar10": metrics["benchmark/cifar10/top1"],
        "datacomp/vtab/caltech101": metrics["benchmark/vtab/caltech101/mean_per_class_recall"],
        f"datacomp/{flickr}": (metrics[f"benchmark/{flickr}/image_to_text_R@1"]
                               + metrics[f"benchmark/{flickr}/text_to_image_R@1"]) / 2,
    }  # fmt: skip
    expected["datacomp/average"] = sum(expected.values()) / 3
    assert summary == pytest.approx(expected)
    folders = ["more/nested/mine", "wds_cifar10_test", "wds_fairface_test", "wds_flickr30k", "wds_vtab-caltech101_test"]
    assert benchmark_folders(root) == folders
    assert set(BenchmarkSuite("all", root).tasks) == {f"benchmark/{f}" for f in benchmark_folders(root)}
    with pytest.raises(ValueError, match="none of its task folders"):
        BenchmarkSuite("imagenet_dist", root)


@pytest.mark.slow
def test_evaluate_compares_a_checkpoint_and_its_export_on_a_suite_in_one_table(tmp_path, trained_checkpoint):
    root = _suite_root(tmp_path)
    export_main([f"checkpoint={trained_checkpoint}", f"out={tmp_path}/export"])
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=[
            f"checkpoint=[{trained_checkpoint},{tmp_path}/export]", "benchmark=datacomp", f"benchmark.root={root}",
            "eval.num_workers=0", "eval.progress=false", f"paths.output_dir={tmp_path}/out",
        ])  # fmt: skip
    os.makedirs(tmp_path / "out")
    results = evaluate(cfg)
    assert list(results) == [trained_checkpoint, f"{tmp_path}/export"]
    assert not any(name.startswith(("zeroshot/shapes", "compositional", "retrieval/")) for name in results[trained_checkpoint])
    for name, value in results[trained_checkpoint].items():  # an export is the checkpoint's model
        if isinstance(value, float):
            assert results[f"{tmp_path}/export"][name] == pytest.approx(value, abs=1e-6), name
    with open(tmp_path / "out" / "results.csv") as f:
        table = list(csv.reader(f))
    assert table[0] == ["metric", "last.ckpt", "export"]  # the shortest distinct trailing paths
    rows = {row[0]: row[1:] for row in table[1:]}
    assert list(rows)[-1] == "datacomp/average" and len(rows) == 4
    assert float(rows["datacomp/average"][0]) == pytest.approx(results[trained_checkpoint]["datacomp/average"], abs=1e-4)
    assert "| datacomp/average |" in (tmp_path / "out" / "results.md").read_text()
    assert Image.open(tmp_path / "out" / "results.png").size[1] > 100
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()).keys() == results.keys()


def _write_compositional_sets(root) -> None:
    """sugarcrepe/: the 7 subset JSONs of one item each and val2017/; winoground/: examples.jsonl of one example and
    images/, in the layouts their tasks read (tests/test_sugarcrepe.py and tests/test_winoground.py check those)."""
    os.makedirs(root / "sugarcrepe" / "val2017")
    Image.new("RGB", (24, 16), (200, 20, 20)).save(root / "sugarcrepe" / "val2017" / "000000008532.jpg")
    for subset in ("add_att", "add_obj", "replace_att", "replace_obj", "replace_rel", "swap_att", "swap_obj"):
        item = {"filename": "000000008532.jpg", "caption": "a red cup", "negative_caption": f"a blue cup ({subset})"}
        (root / "sugarcrepe" / f"{subset}.json").write_text(json.dumps({"7": item}))
    os.makedirs(root / "winoground" / "images")
    for i, colour in enumerate(((200, 20, 20), (20, 20, 200))):
        Image.new("RGB", (20, 12), colour).save(root / "winoground" / "images" / f"ex_0_img_{i}.png")
    example = {"id": 0, "image_0": "ex_0_img_0", "image_1": "ex_0_img_1", "caption_0": "a red square",
               "caption_1": "a blue square", "tag": "Object", "secondary_tag": "", "num_main_preds": 1,
               "collapsed_tag": "Object"}  # fmt: skip
    (root / "winoground" / "examples.jsonl").write_text(json.dumps(example) + "\n")


def test_compositional_suite_runs_the_sets_present_in_their_layouts(tmp_path):
    from clip_train.eval.sugarcrepe import SugarCrepeTask
    from clip_train.eval.winoground import WinogroundTask

    _write_compositional_sets(tmp_path / "sets")
    suite = BenchmarkSuite("compositional", str(tmp_path / "sets"))
    assert set(suite.tasks) == {"benchmark/sugarcrepe", "benchmark/winoground"} and suite.absent == ["aro"]
    model = tiny_clip_model()
    summary = suite.summary(run_tasks(suite.tasks, model, 0, 1))
    direct_sugarcrepe = SugarCrepeTask(root=str(tmp_path / "sets" / "sugarcrepe")).run(model, 0, 1)
    direct_winoground = WinogroundTask(root=str(tmp_path / "sets" / "winoground")).run(model, 0, 1)
    assert summary == pytest.approx({
        "compositional/sugarcrepe": direct_sugarcrepe["mean"],
        **{f"compositional/winoground_{key}": direct_winoground[key] for key in ("text", "image", "group")},
    })  # fmt: skip
