"""A run that starts from pretrained sources (a timm trunk from a weights file, as experiment=lit does, and a
transformers BERT folder) writes a checkpoint that loads, evaluates, exports and resumes with both sources deleted."""

import os
import shutil

import pytest
import timm
import torch
from helpers import colour_samples
from hydra import compose, initialize_config_dir
from safetensors.torch import save_file
from transformers import BertConfig, BertModel

import clip_train
from clip_train.data.shard_writer import write_shards
from clip_train.evaluate import run as evaluate
from clip_train.export import main as export_main
from clip_train.paths import CONFIG_DIR
from clip_train.train import run

TEXTS = ["a red square", "a blue square", "something else"]


def _write_sources(folder) -> tuple[str, str]:
    """A timm `test_vit` trunk's weights file and a 2-layer BERT folder, both random-init: (file, folder)."""
    trunk = timm.create_model("test_vit", pretrained=False, num_classes=0, img_size=32, patch_size=8, global_pool="token")
    os.makedirs(folder / "trunk")
    save_file(trunk.state_dict(), str(folder / "trunk" / "test_vit.safetensors"))
    config = BertConfig(vocab_size=400, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    BertModel(config).save_pretrained(folder / "bert")
    return str(folder / "trunk" / "test_vit.safetensors"), str(folder / "bert")


def _train(folder, trunk_file: str, bert: str, *overrides: str) -> None:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        run(compose("train", overrides=[
            f"paths.output_dir={folder}/run", "data=webdataset", "data.tokenizer_vocab_size=300",
            f"data.train_shards='{folder}/shards/train-{{00000..00003}}.tar'", "data.batch_size=8", "data.num_workers=0",
            "model=test", "model.image_tower.pretrained=true", f"+model.image_tower.pretrained_cfg_overlay.file={trunk_file}",
            "model/text_tower=pretrained", f"model.text_tower.name_or_path={bert}", "logger=[]",
            "trainer.limit_val_batches=0", *overrides,
        ]))  # fmt: skip


@pytest.mark.slow
def test_checkpoint_of_pretrained_towers_needs_no_source(tmp_path):
    trunk_file, bert = _write_sources(tmp_path / "sources")
    write_shards(str(tmp_path / "shards"), "train", colour_samples(40), samples_per_shard=10)
    _train(tmp_path, trunk_file, bert, "trainer.max_steps=2")
    checkpoint = str(tmp_path / "run" / "checkpoints" / "last.ckpt")
    before = clip_train.load(checkpoint)
    texts, scale = before.encode_text(TEXTS), before.logit_scale
    shutil.rmtree(tmp_path / "sources")

    loaded = clip_train.load(checkpoint)
    torch.testing.assert_close(loaded.encode_text(TEXTS), texts, rtol=0, atol=0)
    torch.testing.assert_close(loaded.logit_scale, scale, rtol=0, atol=0)

    os.makedirs(tmp_path / "evaluate")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        metrics = evaluate(compose("evaluate", overrides=[
            f"checkpoint={checkpoint}", "eval=none", f"eval.tasks.retrieval.shards='{tmp_path}/shards/train-00000.tar'",
            "eval.num_workers=0", "eval.progress=false", f"paths.output_dir={tmp_path}/evaluate",
        ]))  # fmt: skip
    assert 0 <= metrics["retrieval/image_to_text_R@1"] <= 1

    export_main([f"checkpoint={checkpoint}", f"out={tmp_path}/export"])
    exported = clip_train.load(str(tmp_path / "export"))
    torch.testing.assert_close(exported.encode_text(TEXTS), texts, rtol=0, atol=0)

    _train(tmp_path, trunk_file, bert, "trainer.max_steps=3", "ckpt_path=last")
    assert torch.load(checkpoint, weights_only=False)["global_step"] == 3
