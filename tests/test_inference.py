"""The Python API: load a checkpoint or an export, encode, classify; export round trip; clear errors."""

import json

import pytest
import torch
from helpers import COLORS, colour_samples
from PIL import Image
from readme_code import python_code, run_in_finished_run

import clip_train
from clip_train.eval.zeroshot import accuracy, image_folder, resolve_templates
from clip_train.export import export
from clip_train.text_classifier import class_weights


def test_checkpoint_and_export_give_identical_embeddings(trained_checkpoint, tmp_path):
    images = [sample.image for sample in colour_samples(5)]
    texts = ["a red square", "a blue square", "something else entirely"]
    from_checkpoint = clip_train.load(trained_checkpoint)
    export(from_checkpoint, str(tmp_path / "export"))
    from_export = clip_train.load(str(tmp_path / "export"))
    image_features = from_checkpoint.encode_image(images)
    assert image_features.shape == (5, 32) and image_features.dtype == torch.float32
    torch.testing.assert_close(image_features.norm(dim=-1), torch.ones(5))
    torch.testing.assert_close(from_export.encode_image(images), image_features, rtol=0, atol=0)
    torch.testing.assert_close(from_export.encode_text(texts), from_checkpoint.encode_text(texts), rtol=0, atol=0)
    probs = from_export.classify(images, list(COLORS), templates=["a {} square"])
    assert probs.shape == (5, 4)
    torch.testing.assert_close(probs.sum(dim=-1), torch.ones(5))
    torch.testing.assert_close(probs, from_checkpoint.classify(images, list(COLORS), templates=["a {} square"]))


def test_exported_image_tower_loads_in_timm(trained_checkpoint, tmp_path):
    import timm

    model = clip_train.load(trained_checkpoint)
    export(model, str(tmp_path / "export"))
    config = json.loads((tmp_path / "export" / "image_tower" / "config.json").read_text())
    trunk = timm.create_model(
        config["architecture"], pretrained=True, num_classes=0, img_size=config["img_size"], patch_size=8,
        pretrained_cfg_overlay={"file": str(tmp_path / "export" / "image_tower" / "model.safetensors")},
    )  # fmt: skip
    pixels = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(trunk.eval()(pixels), model.image_tower.trunk(pixels))


def test_load_errors_are_clear(tmp_path, trained_checkpoint):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.ckpt cannot be read: expected a checkpoint written by python -m clip_train"):
        clip_train.load(str(junk))
    with pytest.raises(ValueError, match="not an exported clip_train model"):
        clip_train.load(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        clip_train.load(str(tmp_path / "absent.ckpt"))
    checkpoint = torch.load(trained_checkpoint, weights_only=True)
    checkpoint["hyper_parameters"]["recipe"]["model"]["image_tower"]["model_name"] = "no_such_timm_model"
    torch.save(checkpoint, tmp_path / "foreign.ckpt")
    with pytest.raises(ValueError, match="cannot build its model"):
        clip_train.load(str(tmp_path / "foreign.ckpt"))


def test_zero_shot_accuracy_with_constructed_features(tmp_path):
    # 3 classes; text embedding of a prompt is the basis vector of the colour word it contains,
    # image features are chosen so that images 0-2 are right and image 3 is wrongly closest to class 0
    basis = {"red": torch.tensor([1.0, 0, 0]), "green": torch.tensor([0, 1.0, 0]), "blue": torch.tensor([0, 0, 1.0])}

    def encode_text(prompts):
        return torch.stack([next(v for k, v in basis.items() if k in p) for p in prompts])

    weights = class_weights(encode_text, ["red", "green", "blue"], resolve_templates("generic"))
    torch.testing.assert_close(weights, torch.eye(3))
    features = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0.2, 0.9], [0.9, 0, 0.1]])
    labels = torch.tensor([0, 1, 2, 2])
    result = accuracy(features, labels, weights, ["red", "green", "blue"])
    assert result["top1"] == 0.75 and result["top5"] == 1.0
    assert result["per_class"] == {"red": 1.0, "green": 1.0, "blue": 0.5}


def test_image_folder_reads_classes_and_rejects_bad_layouts(tmp_path):
    for colour in ("blue", "red"):
        (tmp_path / "zs" / colour).mkdir(parents=True)
        for index, sample in enumerate(colour_samples(2)):
            sample.image.save(tmp_path / "zs" / colour / f"{index}.png")
    (tmp_path / "names.txt").write_text("a blue thing\na red thing\n")
    paths, labels, names = image_folder(str(tmp_path / "zs"), str(tmp_path / "names.txt"))
    assert len(paths) == 4 and labels == [0, 0, 1, 1] and names == ["a blue thing", "a red thing"]
    (tmp_path / "short.txt").write_text("only one\n")
    with pytest.raises(ValueError, match="has 1 class names but .* has 2 class folders"):
        image_folder(str(tmp_path / "zs"), str(tmp_path / "short.txt"))
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        image_folder(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="needs a"):
        resolve_templates(["no placeholder"])


class FixedEncoder:
    """Stands in for a ClipModel: each image is a solid colour, embedded as its normalised RGB;
    a text query names a colour and is embedded the same way. The right answers are known."""

    embed_dim = 3

    def encode_image(self, images, batch_size=64):
        rgb = [Image.open(i).getpixel((0, 0)) if isinstance(i, str) else i.getpixel((0, 0)) for i in images]
        return torch.nn.functional.normalize(torch.tensor(rgb, dtype=torch.float32), dim=-1)

    def encode_text(self, texts):
        return torch.nn.functional.normalize(torch.tensor([COLORS[t] for t in texts], dtype=torch.float32), dim=-1)


def test_index_search_duplicates_and_round_trip(tmp_path):
    from clip_train import ImageTextIndex

    paths = []
    for name in ("red", "green", "blue", "red"):  # the second red is a duplicate of the first
        path = str(tmp_path / f"{len(paths)}_{name}.png")
        Image.new("RGB", (8, 8), COLORS[name]).save(path)
        paths.append(path)
    index = ImageTextIndex(FixedEncoder(), chunk_rows=3)  # chunking across the duplicate pair
    index.add(paths[:2])
    index.add([Image.open(p) for p in paths[2:]], names=paths[2:])
    hits = index.search_text("blue", k=2)
    assert hits[0] == (paths[2], pytest.approx(1.0)) and hits[1][1] < 0.5
    assert {path for path, _ in index.search_image(paths[0], k=2)} == {paths[0], paths[3]}
    assert index.find_duplicates(0.99) == [(paths[0], paths[3], pytest.approx(1.0))]
    index.save(str(tmp_path / "index"))
    again = ImageTextIndex.load(str(tmp_path / "index"), FixedEncoder())
    assert again.paths == paths and torch.equal(again.embeddings, index.embeddings)
    with pytest.raises(ValueError, match="give `names`"):
        index.add([Image.open(paths[0])])


def test_readme_api_and_index_examples_run_as_written(trained_checkpoint, tmp_path, monkeypatch, capsys):
    """The README's "Using a trained model" code, executed in a folder that holds a finished run."""
    namespace = run_in_finished_run(python_code("## Using a trained model"), trained_checkpoint, tmp_path, monkeypatch)
    assert namespace["probs"].shape == (8, 5) and namespace["image_features"].shape == (8, 32)
    assert len(namespace["index"].paths) == 8
    assert "photos/" in capsys.readouterr().out
