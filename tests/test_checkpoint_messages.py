"""A checkpoint that cannot be used is named with what was expected, in a few lines: an unreadable file given to
`ckpt_path=` or `clip_train.load`, and a checkpoint trained as another model than the run asks for."""

import pytest
from helpers import colour_samples

import clip_train
from clip_train.data.shard_writer import write_shards
from clip_train.train import run


@pytest.fixture
def html_checkpoint(tmp_path):
    """An HTML error page saved as last.ckpt, as a failed download leaves it."""
    path = tmp_path / "last.ckpt"
    path.write_text("<html><body>403 Forbidden</body></html>\n")
    return str(path)


def own_shards_config(compose_config, tmp_path, *overrides):
    write_shards(str(tmp_path / "shards"), "train", colour_samples(16), samples_per_shard=8)
    pattern = f"{tmp_path}/shards/train-{{00000..00001}}.tar"
    return compose_config(f"data.train_shards='{pattern}'", "data.batch_size=8", "data.num_workers=0", *overrides)


def test_load_names_an_unreadable_file_and_what_it_expected(html_checkpoint):
    with pytest.raises(ValueError) as error:
        clip_train.load(html_checkpoint)
    message = str(error.value)
    assert message.startswith(f"clip_train.load: {html_checkpoint} cannot be read: expected a checkpoint written by")
    assert "not in torch.save's format" in message and "weights_only" not in message


def test_resuming_from_an_unreadable_file_names_it_before_the_model_is_built(html_checkpoint, compose_config, tmp_path):
    cfg = own_shards_config(compose_config, tmp_path, "model=test", f"ckpt_path={html_checkpoint}")
    with pytest.raises(ValueError, match=f"ckpt_path: {html_checkpoint} cannot be read: expected a checkpoint"):
        run(cfg)


@pytest.mark.slow
def test_resuming_as_another_model_says_so_in_a_few_lines(trained_checkpoint, compose_config, tmp_path):
    cfg = own_shards_config(compose_config, tmp_path, "model=tiny", f"ckpt_path={trained_checkpoint}")
    with pytest.raises(ValueError) as error:
        run(cfg)
    message = str(error.value)
    assert "was trained as a different model than this run asks for" in message
    assert "model.image_tower.model_name: checkpoint 'test_vit', this run 'vit_tiny_r_s16_p8_224'" in message
    assert len(message.splitlines()) <= 9


def test_a_resumed_run_may_change_training_options_but_not_the_architecture():
    from clip_train.checkpoint_file import model_differences

    trained = {"_target_": "DualEncoder", "embed_dim": 32, "image_tower": {"model_name": "test_vit", "lock": False}}
    asked = {"_target_": "DualEncoder", "embed_dim": 64, "image_tower": {"model_name": "test_vit", "lock": True}, "new": 1}
    assert model_differences(trained, asked) == ["model.embed_dim: checkpoint 32, this run 64"]
    assert model_differences(trained, trained | {"image_tower": {"model_name": "test_vit", "patch_dropout": 0.5}}) == []
