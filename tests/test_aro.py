"""ARO in the layouts its code reads (VG JSONs + images/, COCO and Flickr karpathy test JSONs + image folders):
macro accuracies worked by hand on a table model (crops, ties, excluded relations, the attribute-pair minimum),
a naive loop of a real tiny model, the config node, and 2 gloo ranks."""

import json
import os

import pytest
import torch
from gloo import on_gloo_ranks
from helpers import tiny_clip_model
from hydra.utils import instantiate
from PIL import Image
from table_model import TableModel

from clip_train.config import check_keys
from clip_train.eval.aro import AroTask, excluded_relations
from clip_train.eval.aro_order import order_options, word_tokens
from clip_train.eval.tasks import named_tasks, run_tasks

R, G, B = (1, 0, 0), (0, 1, 0), (0, 0, 1)
LEFT, RIGHT = (0, 0, 20, 16), (20, 0, 20, 16)  # bbox x, y, w, h of the red and the blue half of each image
# (box, true caption vector, false caption vector, relation): by hand, "on" 2/3, "under" 1/2 (its second item
# ties: wrong, as ARO's argmax gives a tie to the false caption), "next to" 1/1 but excluded from the macro mean
RELATIONS = [
    (LEFT, R, B, "on"), (RIGHT, B, R, "on"), (RIGHT, R, B, "on"),
    (LEFT, R, (1, 1, 1), "under"), (RIGHT, B, B, "under"),
    (LEFT, R, B, "next to"),
]  # fmt: skip
# attribute pairs: "red_blue" 2/3, "big_small" 2/2; "old_new" (1 item) is under min_attribute_count=2
ATTRIBUTES = [
    (LEFT, R, B, ["red", "blue"]), (RIGHT, B, R, ["red", "blue"]), (LEFT, B, R, ["red", "blue"]),
    (RIGHT, B, G, ["big", "small"]), (LEFT, R, G, ["big", "small"]), (LEFT, B, R, ["old", "new"]),
]  # fmt: skip
VG_EXPECTED = {"vg_relation": (2 / 3 + 1 / 2) / 2, "vg_attribution": (2 / 3 + 1) / 2}


def _flat(metrics: dict) -> dict[str, float]:
    """{key or key/name: value}: the breakdowns' entries as keys of their own, for pytest.approx."""
    flat = {}
    for key, value in metrics.items():
        flat |= {f"{key}/{name}": v for name, v in value.items()} if isinstance(value, dict) else {key: value}
    return flat


def _half_and_half(path) -> None:
    image = Image.new("RGB", (40, 16), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 16))
    image.save(path)


def write_vg(root) -> tuple[str, dict]:
    """ROOT/visual_genome_{relation,attribution}.json and ROOT/images/; the caption -> vector table."""
    os.makedirs(root / "images")
    texts = {}
    for file, items, field in (
        ("visual_genome_relation.json", RELATIONS, "relation_name"),
        ("visual_genome_attribution.json", ATTRIBUTES, "attributes"),
    ):
        entries = []
        for k, (box, true, false, group) in enumerate(items):
            name = f"{file[14:17]}{k}.jpg"
            _half_and_half(root / "images" / name)
            texts |= {f"{file} {k} true": true, f"{file} {k} false": false}
            entries.append({
                "image_id": str(k), "image_path": name, "bbox_x": box[0], "bbox_y": box[1], "bbox_w": box[2],
                "bbox_h": box[3], "true_caption": f"{file} {k} true", "false_caption": f"{file} {k} false", field: group,
            })  # fmt: skip
        (root / file).write_text(json.dumps(entries))
    return str(root), texts


def test_vg_sets_are_macro_accuracies_over_relations_and_attribute_pairs(tmp_path):
    root, texts = write_vg(tmp_path)
    got = AroTask(root=root, min_attribute_count=2, batch_size=4).run(TableModel(texts), 0, 1)
    assert "next to" in excluded_relations() and "on" not in excluded_relations()
    assert _flat(got) == pytest.approx(_flat(VG_EXPECTED | {
        "vg_relation_per_relation": {"on": 2 / 3, "under": 1 / 2},
        "vg_attribution_per_pair": {"red_blue": 2 / 3, "big_small": 1.0},
    }))  # fmt: skip
    with_all_pairs = AroTask(root=root, min_attribute_count=1).run(TableModel(texts), 0, 1)
    assert with_all_pairs["vg_attribution"] == pytest.approx((2 / 3 + 1 + 0) / 3)


@torch.no_grad()
def test_a_real_model_scores_as_the_naive_loop(tmp_path):
    root, _ = write_vg(tmp_path)
    model = tiny_clip_model()
    got = AroTask(root=root, min_attribute_count=1, batch_size=4).run(model, 0, 1)
    for file, field, key in (("visual_genome_relation.json", "relation_name", "vg_relation"),
                             ("visual_genome_attribution.json", "attributes", "vg_attribution")):  # fmt: skip
        per_group = {}
        for item in json.loads((tmp_path / file).read_text()):
            box = (item["bbox_x"], item["bbox_y"], item["bbox_x"] + item["bbox_w"], item["bbox_y"] + item["bbox_h"])
            crop = Image.open(os.path.join(root, "images", item["image_path"])).convert("RGB").crop(box)
            image = model.encode_image([crop])[0]
            true, false = model.encode_text([item["true_caption"]])[0], model.encode_text([item["false_caption"]])[0]
            group = item[field] if isinstance(item[field], str) else "_".join(item[field])
            per_group.setdefault(group, []).append(float(image @ true) > float(image @ false))
        kept = {
            g: sum(v) / len(v)
            for g, v in per_group.items()
            if g not in (excluded_relations() if field == "relation_name" else ())
        }
        assert got[key] == pytest.approx(sum(kept.values()) / len(kept))


NOUNS, ADJECTIVES = {"dog", "cat", "ball", "field", "man", "horse", "beach"}, {"brown", "white", "red", "big"}
CAPTIONS = {  # per set: (image colour, [captions]) per image
    "coco": [(R, ["A brown dog chases a white cat across the big field.", "A man rides a brown horse on the beach."]),
             (B, ["A white cat watches a red ball near the brown dog."])],
    "flickr": [(R, ["A big man throws a red ball to a brown dog."])],
}  # fmt: skip


def tagger(text: str) -> list[tuple[str, str]]:
    """A tiny lexicon tagger standing in for spaCy."""
    return [(t, "NN" if t.lower() in NOUNS else "JJ" if t.lower() in ADJECTIVES else "DT") for t in word_tokens(text)]


def write_order_sets(root) -> tuple[str, str, dict, dict]:
    """ROOT/coco/coco_karpathy_test.json + val2014/, ROOT/flickr/flickr30k_test.json + flickr30k-images/; the
    caption table; the expected precision@1 per set, worked out caption by caption below."""
    texts, expected = {}, {}
    for name, file, folder in (
        ("coco", "coco_karpathy_test.json", "val2014"),
        ("flickr", "flickr30k_test.json", "flickr30k-images"),
    ):
        os.makedirs(root / name / folder)
        annotation, verdicts = [], []
        for i, (colour, captions) in enumerate(CAPTIONS[name]):
            image = f"{folder}/{'COCO_val2014_' if name == 'coco' else ''}{i:012d}.jpg"
            Image.new("RGB", (16, 16), tuple(255 * v for v in colour)).save(root / name / image)
            annotation.append({"image": image, "caption": captions, "image_id": str(i)})
            for c, caption in enumerate(captions):
                options = order_options(caption, tagger, f"{image}/{c}", 30)  # the task's key: image/caption index
                assert len(set(options)) == 5
                rule = (len(verdicts)) % 3  # 0: the true caption matches the image; 1: a perturbation does; 2: all tie
                texts[options[0]] = colour if rule == 0 else G
                for k, option in enumerate(options[1:]):
                    texts[option] = colour if rule == 1 and k == 2 else G
                verdicts.append(rule != 1)  # a tie goes to the true caption, ARO's argmax picks the first option
        (root / name / file).write_text(json.dumps(annotation))
        expected[f"{name}_order"] = sum(verdicts) / len(verdicts)
    return str(root / "coco"), str(root / "flickr"), texts, expected


def test_order_sets_score_the_true_caption_against_its_perturbations(tmp_path):
    coco, flickr, texts, expected = write_order_sets(tmp_path)
    assert expected == {"coco_order": 2 / 3, "flickr_order": 1.0}
    got = AroTask(coco_root=coco, flickr_root=flickr, pos_tagger=tagger, batch_size=2).run(TableModel(texts), 0, 1)
    assert got == pytest.approx(expected)


def test_the_config_node_runs_under_the_task_contract(compose_config, tmp_path):
    root, texts = write_vg(tmp_path / "vg")
    cfg = compose_config(
        "checkpoint=run.ckpt", "eval=none", "~eval.tasks.retrieval", "+eval/task@eval.tasks.aro=aro",
        f"eval.tasks.aro.root={root}", "eval.tasks.aro.min_attribute_count=2", config_name="evaluate",
    )  # fmt: skip
    check_keys(cfg)
    tasks = named_tasks(instantiate(cfg.eval.tasks, _convert_="partial"))
    metrics = run_tasks(tasks, TableModel(texts), 0, 1)
    assert {k: metrics[f"aro/{k}"] for k in VG_EXPECTED} == pytest.approx(VG_EXPECTED)


def test_bad_input_is_named(tmp_path):
    with pytest.raises(ValueError, match="needs a root"):
        AroTask()
    with pytest.raises(FileNotFoundError, match=r"visual_genome_relation\.json is missing"):
        AroTask(root=str(tmp_path)).run(TableModel({}), 0, 1)
    (tmp_path / "visual_genome_relation.json").write_text(json.dumps([{"image_path": "a.jpg", "bbox_x": 0}]))
    with pytest.raises(ValueError, match=r"visual_genome_relation\.json: item 0 has no bbox_y"):
        AroTask(root=str(tmp_path)).run(TableModel({}), 0, 1)
    coco = tmp_path / "coco"
    coco.mkdir()
    (coco / "coco_karpathy_test.json").write_text(json.dumps([{"image": "val2014/x.jpg", "caption": ["a dog"]}]))
    with pytest.raises(RuntimeError, match="spaCy pipeline 'no_such_pipeline'"):
        AroTask(coco_root=str(coco), pos_tagger="no_such_pipeline").run(TableModel({}), 0, 1)


def _rank_metrics(rank: int, world: int, root: str, coco: str, flickr: str, texts: dict) -> dict:
    return AroTask(root, coco, flickr, pos_tagger=tagger, min_attribute_count=2, batch_size=1).run(
        TableModel(texts), rank, world
    )


@pytest.mark.slow
def test_two_ranks_sum_their_shares_like_one_process(tmp_path):
    root, vg_texts = write_vg(tmp_path / "vg")
    coco, flickr, texts, expected = write_order_sets(tmp_path / "order")  # flickr's one image: rank 1 has none
    one = _rank_metrics(0, 1, root, coco, flickr, vg_texts | texts)
    assert {k: one[k] for k in (*VG_EXPECTED, *expected)} == pytest.approx(VG_EXPECTED | expected)
    for got in on_gloo_ranks(_rank_metrics, 2, tmp_path, root, coco, flickr, vg_texts | texts):
        assert _flat(got) == pytest.approx(_flat(one))
