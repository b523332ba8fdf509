"""Checkpoints written under transformers 4 (`...transformer.text_model.encoder...`) and 5 (`...transformer.encoder...`)
both load, in the Python API and as a resumed run, whichever version is installed."""

import torch

import clip_train
from clip_train.model.checkpoint_keys import match_model_keys
from clip_train.train import run

TEXT = "text_tower.transformer."


def relayout(path: str, out: str, to_transformers_4: bool) -> str:
    """A copy of checkpoint `path` whose text-tower keys take the other transformers major version's layout."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state = checkpoint["state_dict"]
    if to_transformers_4:
        renamed = {
            k.replace(TEXT, TEXT + "text_model.") if TEXT in k and ".text_model." not in k else k: v for k, v in state.items()
        }
    else:
        renamed = {k.replace(TEXT + "text_model.", TEXT): v for k, v in state.items()}
    assert renamed.keys() != state.keys()
    checkpoint["state_dict"] = renamed
    torch.save(checkpoint, out)
    return out


def other_layout(path: str, out: str) -> str:
    installed_has_level = any(".text_model." in k for k in torch.load(path, weights_only=False)["state_dict"])
    return relayout(path, out, to_transformers_4=not installed_has_level)


def test_a_checkpoint_of_the_other_transformers_layout_loads_with_the_same_weights(trained_checkpoint, tmp_path):
    other = other_layout(trained_checkpoint, str(tmp_path / "other.ckpt"))
    captions = ["a red square", "a blue square"]
    assert torch.equal(clip_train.load(other).encode_text(captions), clip_train.load(trained_checkpoint).encode_text(captions))


def test_a_run_resumes_from_a_checkpoint_of_the_other_layout(trained_checkpoint, tmp_path, compose_config, colour_shards):
    other = other_layout(trained_checkpoint, str(tmp_path / "other.ckpt"))
    metrics = run(
        compose_config(
            "data=webdataset", f"data.train_shards='{colour_shards}'", "data.batch_size=8", "data.num_workers=0",
            "model=test", "trainer.max_steps=4", "logger=[]", "trainer.limit_val_batches=0", f"ckpt_path={other}",
        )
    )  # fmt: skip
    assert metrics["train/samples_seen"] == 4 * 8  # 3 steps restored, 1 more trained


def test_keys_map_both_ways_and_unknown_keys_are_left_for_the_load_to_name():
    v4 = ["text_tower.transformer.text_model.encoder.w", "image_tower.trunk.w"]
    v5 = ["text_tower.transformer.encoder.w", "image_tower.trunk.w"]
    weights = [torch.zeros(1), torch.ones(1)]
    assert list(match_model_keys(dict(zip(v4, weights)), v5)) == v5
    assert list(match_model_keys(dict(zip(v5, weights)), v4)) == v4
    assert list(match_model_keys({"text_tower.extra.w": weights[0]}, v5)) == ["text_tower.extra.w"]
