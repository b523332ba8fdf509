"""FLYP: an ImageFolder of classes read as class-name captions (data.kind=classes), an export as a warm start
(model.init_from), the 48-class drawn set `looks`, and a tiny FLYP run that raises zero-shot accuracy on held-out
images of the same classes."""

import json
import os
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import clip_train
from clip_train.data.bad_data import BadSampleCounter
from clip_train.data.pipeline import decode_pair
from clip_train.data.source_kinds import row_source_units, unit_samples
from clip_train.eval.synthetic_sets import write_class_folders, write_class_splits
from clip_train.export import export
from clip_train.interop.reader import init_from
from clip_train.paths import CONFIG_DIR
from clip_train.train import run as train


def _captions(root: str) -> dict[str, str]:
    """{sample key: caption} of every sample of the classes source at `root`."""
    units, sizes = row_source_units(root, "classes", "data.train", rows_per_unit=7)
    assert max(sizes) == 7
    counter = BadSampleCounter()
    pairs = [decode_pair(sample, counter) for sample in unit_samples(({"url": unit} for unit in units), counter)]
    assert counter.take().sum() == 0 and all(pairs)
    return {key: caption for _, caption, key in pairs}


def test_each_image_is_captioned_by_its_folders_class_name_in_one_of_the_templates(tmp_path):
    root = write_class_folders("looks", str(tmp_path), per_class=3, image_size=16)
    folders = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    names = (tmp_path / root / "classnames.txt").read_text().split("\n")
    templates = (tmp_path / root / "templates.txt").read_text().strip().split("\n")
    assert len(folders) == 48 and len(templates) == 3
    captions = _captions(root)
    assert len(captions) == 48 * 3
    used = set()
    for key, caption in captions.items():
        folder = key.split("/")[0]
        size, colour, background = folder.split("_")
        name = names[folders.index(folder)]
        assert name == f"{size} {colour} shape on a {background} background"  # classnames.txt in folder order
        assert caption in {template.format(name) for template in templates}
        used.add(caption.replace(name, "{}"))
    assert used == set(templates)  # the images spread over every template


def test_without_name_or_template_files_the_folder_names_and_the_photo_template_are_used(tmp_path):
    root = write_class_folders("colours", str(tmp_path), per_class=2, image_size=16)
    os.remove(os.path.join(root, "classnames.txt"))
    os.remove(os.path.join(root, "templates.txt"))
    assert sorted(set(_captions(root).values())) == sorted(f"a photo of a {colour}." for colour in os.listdir(root))
    (tmp_path / "bad").mkdir()
    with pytest.raises(ValueError, match="no class folder"):
        row_source_units(str(tmp_path / "bad"), "classes", "data.train")


def test_an_export_is_a_warm_start_with_its_weights_and_tokenizer(tmp_path, trained_checkpoint):
    model = clip_train.load(trained_checkpoint)
    export(model, str(tmp_path / "export"))
    source = init_from(str(tmp_path / "export"))
    assert source.tokenizer == str(tmp_path / "export")
    rebuilt = instantiate(source.model_config)
    rebuilt.load_state_dict(source.state_dict, strict=True)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(rebuilt.state_dict()[name], value, rtol=0, atol=0, msg=name)


def _zero_shot(checkpoint: str, test: str, out) -> float:
    os.makedirs(out)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"checkpoint={checkpoint}", "eval=none", f"+eval.zeroshot.set={test}",
                                             "eval.progress=false", f"paths.output_dir={out}"])  # fmt: skip
        from clip_train.evaluate import run as evaluate

        return evaluate(cfg)["zeroshot/set/top1"]


@pytest.mark.slow
def test_flyp_raises_zero_shot_accuracy_on_held_out_images(tmp_path, trained_checkpoint):
    """The base: 3 steps of the test preset on colour squares (the shared fixture), near chance on drawn colours;
    FLYP: 100 steps of 16 on 8 drawn colour classes (12 images each) from its export; zero-shot on 10 held-out
    images per class before (python -m clip_train.evaluate) and after (the run's own zero-shot task). Measured:
    0.15 before, 0.36 after (chance 0.125, one standard deviation of an 80-image score at chance 0.04); the
    accuracy climbs on with more steps (0.80 after 150 from another near-random base)."""
    export(clip_train.load(trained_checkpoint), str(tmp_path / "base"))
    root = write_class_splits("colours", str(tmp_path / "colours"), train_per_class=12, test_per_class=10)
    test = os.path.join(root, "test")
    before = _zero_shot(str(tmp_path / "base"), test, tmp_path / "before")
    overrides = [
        "experiment=flyp", f"model.init_from={tmp_path}/base", f"data.train={root}/train", f"data.val={test}",
        f"paths.output_dir={tmp_path}/flyp", "data.batch_size=16", "data.num_workers=0", "trainer.max_steps=100",
        "trainer.val_check_interval=100", "trainer.num_sanity_val_steps=0", "optim.optimizer.lr=1.5e-3",
        "optim.scheduler.warmup_steps=10", "logger=[]", "trainer.enable_progress_bar=false", "ckpt_path=null",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        after = train(compose("train", overrides=overrides))["zeroshot/classes/top1"]
    print(json.dumps({"before": before, "after": after}), file=sys.stderr)
    assert before < 0.25 and after > before + 0.15, (before, after)
