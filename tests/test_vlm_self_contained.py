"""A VLM stage checkpoint loads, and a later stage starts from it, after the CLIP checkpoint it was built on is gone."""

import os
import shutil

import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

import clip_train
from clip_train.paths import CONFIG_DIR
from clip_train.vlm.run import run
from clip_train.vlm.text import prompt_ids

TINY = [
    "data.scenes.num_train=20", "data.scenes.num_test=4", "data.batch_size=4", "stages.align.steps=2",
    "stages.instruct.steps=2", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
]  # fmt: skip


def _config(folder, *overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("vlm", overrides=[f"paths.output_dir={folder}", *TINY, *overrides])


def _logits(vlm, image: Image.Image) -> torch.Tensor:
    ids = torch.tensor([prompt_ids(vlm.tokenizer, "what color is the circle?", with_image=True)])
    with torch.no_grad():
        embeddings = vlm.model.splice(ids, torch.ones_like(ids), vlm.preprocess(image)[None])[0]
        return vlm.model.language_model(inputs_embeds=embeddings).logits


def _as_written_before_the_tower_recipe(stage: str, clip: str, out: str) -> str:
    """A copy of the stage checkpoint as the first VLM stage wrote it: no tower recipe, the CLIP checkpoint's path."""
    checkpoint = torch.load(stage, weights_only=True)
    del checkpoint["vlm_recipe"]["tower"]
    checkpoint["vlm_recipe"]["vision"]["checkpoint"] = clip
    torch.save(checkpoint, out)
    return out


@pytest.mark.slow
def test_a_stage_checkpoint_loads_and_starts_the_next_stage_without_the_clip_checkpoint(trained_checkpoint, tmp_path):
    clip = str(tmp_path / "clip.ckpt")
    shutil.copy(trained_checkpoint, clip)
    run(_config(tmp_path / "align", "stage=align", f"vision.checkpoint={clip}"))
    stage = str(tmp_path / "align/align/checkpoints/last.ckpt")
    image = Image.new("RGB", (40, 30), (30, 200, 40))  # not square: the preprocessing's resize and crop matter
    before = clip_train.load_vlm(stage)
    logits, answer = _logits(before, image), before.ask(image, "what color is the circle?")
    older = _as_written_before_the_tower_recipe(stage, clip, str(tmp_path / "older.ckpt"))
    torch.testing.assert_close(_logits(clip_train.load_vlm(older), image), logits, rtol=0, atol=0)

    os.remove(clip)
    after = clip_train.load_vlm(stage)
    torch.testing.assert_close(_logits(after, image), logits, rtol=0, atol=0)
    assert after.ask(image, "what color is the circle?") == answer
    with pytest.raises(FileNotFoundError, match="clip.ckpt does not exist"):
        clip_train.load_vlm(older)  # an older stage still needs its CLIP checkpoint

    run(_config(tmp_path / "instruct", "stage=instruct", f"init_from={stage}"))  # no vision.checkpoint: the stage's tower
    aligned = torch.load(stage, weights_only=True)["state_dict"]
    instructed = torch.load(tmp_path / "instruct/instruct/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    tower = [name for name in aligned if name.startswith("model.vision.")]
    assert tower and all(torch.equal(instructed[name], aligned[name]) for name in tower)  # frozen, from the stage


def test_without_a_clip_checkpoint_an_older_stage_is_refused_by_name(tmp_path):
    older = tmp_path / "older.ckpt"
    torch.save({"vlm_tokenizer": {}, "vlm_recipe": {"vision": {}}, "state_dict": {}}, older)
    with pytest.raises(ValueError, match="carries no image-tower recipe"):
        run(_config(tmp_path, f"init_from={older}"))
