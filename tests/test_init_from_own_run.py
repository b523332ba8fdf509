"""model.init_from our own runs: a checkpoint (.ckpt or sharded folder) or an export is a warm start in one key,
and the warm-started model encodes exactly as the source (clip_train.load of it) does."""

import json
import os

import pytest
import torch
import torch.distributed.checkpoint as dcp
from helpers import colour_samples
from hydra.utils import instantiate

import clip_train
from clip_train.data.tokenizer import load_tokenizer
from clip_train.export import main as export_main
from clip_train.interop.warm_start import load_pretrained_weights, start_from_pretrained
from clip_train.train import run

TEXTS = ["a red square", "a blue square", "green"]


def _embeddings(model: clip_train.ClipModel) -> tuple[torch.Tensor, torch.Tensor]:
    images = [sample.image for sample in colour_samples(4)]
    return model.encode_image(images), model.encode_text(TEXTS)


def _sharded_copy(checkpoint: str, folder: str) -> str:
    """`checkpoint` as trainer=fsdp's sharded layout writes it: weights through torch.distributed.checkpoint
    (`.metadata` + `*.distcp`), everything else in Lightning's `meta.pt`."""
    whole = torch.load(checkpoint, map_location="cpu", weights_only=True)
    os.makedirs(folder)
    torch.save({key: value for key, value in whole.items() if key != "state_dict"}, os.path.join(folder, "meta.pt"))
    dcp.save({"state_dict": whole["state_dict"]}, storage_writer=dcp.FileSystemWriter(folder), no_dist=True)
    return folder


@pytest.mark.slow
def test_a_run_warm_started_from_a_checkpoint_encodes_as_it(trained_checkpoint, tmp_path, compose_config):
    """Two steps at learning rate 0 from last.ckpt: the new run's checkpoint embeds images and captions exactly as
    the source, with its tokenizer's ids (not a BPE learnt anew)."""
    shards = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(trained_checkpoint))), "shards")
    run(
        compose_config(
            "model=clip_pretrained", f"model.init_from={trained_checkpoint}", "data=webdataset",
            f"data.train_shards='{shards}/train-{{00000..00003}}.tar'", "data.batch_size=8", "data.num_workers=0",
            "trainer.max_steps=2", "logger=[]", "trainer.limit_val_batches=0", "optim.optimizer.lr=0",
        )
    )  # fmt: skip
    source, warm = clip_train.load(trained_checkpoint), clip_train.load(str(tmp_path / "run" / "checkpoints" / "last.ckpt"))
    assert warm.tokenize(TEXTS)["input_ids"].tolist() == source.tokenize(TEXTS)["input_ids"].tolist()
    for ours, theirs in zip(_embeddings(warm), _embeddings(source), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert warm.recipe.model == source.recipe.model


@pytest.mark.parametrize("kind", ["sharded", "export"])
def test_sharded_checkpoints_and_exports_are_sources_too(trained_checkpoint, tmp_path, compose_config, kind):
    """The model a run would build from a sharded checkpoint folder or a clip_train export: the source's
    embeddings exactly, and the export's preprocessing (its recipe's mean, set apart from OpenAI's here)."""
    if kind == "sharded":
        path = _sharded_copy(trained_checkpoint, str(tmp_path / "sharded"))
    else:
        path = str(tmp_path / "export")
        export_main([f"checkpoint={trained_checkpoint}", f"out={path}"])
        with open(os.path.join(path, "clip_train_config.json")) as f:
            recipe = json.load(f)
        with open(os.path.join(path, "clip_train_config.json"), "w") as f:
            json.dump(recipe | {"image_mean": [0.3, 0.4, 0.5], "image_resize": "squash"}, f)
    cfg = compose_config("model=clip_pretrained", f"model.init_from={path}")
    cfg, pretrained = start_from_pretrained(cfg)
    model = instantiate(cfg.model).eval()
    load_pretrained_weights(model, pretrained)
    source = clip_train.load(path)
    warm = clip_train.ClipModel(model, load_tokenizer(cfg.data.tokenizer), source.recipe)  # the run's tokenizer
    assert warm.tokenize(TEXTS)["input_ids"].tolist() == source.tokenize(TEXTS)["input_ids"].tolist()
    for ours, theirs in zip(_embeddings(warm), _embeddings(source), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    expected_mean = [0.3, 0.4, 0.5] if kind == "export" else [0.48145466, 0.4578275, 0.40821073]
    assert list(cfg.data.image_mean) == expected_mean
    assert cfg.data.image_resize == ("squash" if kind == "export" else "shortest")
    assert (cfg.data.tokenizer == path) == (kind == "export")  # an export is its own tokenizer folder
