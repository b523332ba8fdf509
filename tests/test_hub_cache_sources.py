"""`model.init_from` by name, resolved in a local Hugging Face cache laid out as the hub writes it
(`models--ORG--NAME/snapshots/<commit>/` with `refs/main`), never downloading."""

import os
import shutil

import huggingface_hub.constants
import pytest
import torch
from hf_clip_models import save_small_clip

from clip_train.interop.hub_cache import resolve_source
from clip_train.interop.reader import init_from

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _cache(tmp_path, monkeypatch, repo: str):
    """An empty hub cache at tmp_path/hub, in use, and the snapshot folder `repo` would have in it."""
    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    folder = cache / f"models--{repo.replace('/', '--')}"
    os.makedirs(folder / "refs")
    (folder / "refs" / "main").write_text(COMMIT)
    return folder / "snapshots" / COMMIT


def test_a_hub_id_in_the_local_cache_reads_as_its_folder(tmp_path, monkeypatch):
    snapshot = _cache(tmp_path, monkeypatch, "openai/clip-tiny-test")
    reference = save_small_clip(str(snapshot))
    from_cache = init_from("openai/clip-tiny-test")
    from_folder = init_from(str(snapshot))
    assert from_cache.state_dict.keys() == from_folder.state_dict.keys()
    for name, value in from_folder.state_dict.items():
        assert torch.equal(from_cache.state_dict[name], value), name
    assert from_cache.state_dict["logit_scale"].item() == pytest.approx(reference.logit_scale.item())


def test_a_name_the_cache_lacks_fails_with_the_download_command(tmp_path, monkeypatch):
    _cache(tmp_path, monkeypatch, "someone/else")
    with pytest.raises(ValueError, match=r"huggingface-cli download openai/clip-vit-base-patch32"):
        init_from("openai/clip-vit-base-patch32")
    assert resolve_source(str(tmp_path)) == str(tmp_path)  # an existing path is taken as it is


def test_an_open_clip_name_resolves_to_the_repository_its_registry_gives(tmp_path, monkeypatch):
    pytest.importorskip("open_clip")
    snapshot = _cache(tmp_path, monkeypatch, "laion/CLIP-ViT-B-32-laion2B-s34B-b79K")
    os.makedirs(snapshot)
    (snapshot / "open_clip_config.json").write_text("{}")
    assert resolve_source("ViT-B-32/laion2b_s34b_b79k") == str(snapshot)
    shutil.rmtree(snapshot.parent.parent)
    with pytest.raises(ValueError, match=r"OpenCLIP's ViT-B-32/laion2b_s34b_b79k.*download laion/CLIP-ViT-B-32"):
        resolve_source("ViT-B-32/laion2b_s34b_b79k")
