"""Shared test set-up and fixtures: offline environment, a private cache, tiny shards, config composition and a
trained checkpoint. Shared helper functions are in helpers.py."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import pytest  # noqa: E402
from helpers import colour_samples  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from clip_train.data.shard_writer import write_shards  # noqa: E402
from clip_train.paths import CONFIG_DIR  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Synthetic sets and learnt tokenizers go to a per-session folder, never the user's cache."""
    os.environ["CLIP_TRAIN_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    return os.environ["CLIP_TRAIN_CACHE"]


@pytest.fixture
def colour_shards(tmp_path):
    """4 shards of 10 samples each (keys 0..39), with sizes.json; returns the brace pattern."""
    write_shards(str(tmp_path), "train", colour_samples(40), samples_per_shard=10)
    return str(tmp_path / "train-{00000..00003}.tar")


@pytest.fixture
def compose_config(tmp_path):
    """compose_config(*overrides) -> the real train config, composed as the CLI would."""

    def _compose(*overrides: str, config_name: str = "train"):
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose(config_name, overrides=[f"paths.output_dir={tmp_path}/run", *overrides])

    return _compose


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    """A few steps of the test preset on colour squares: enough to have a real checkpoint; its last.ckpt path."""
    from clip_train.train import run

    folder = tmp_path_factory.mktemp("trained")
    write_shards(str(folder / "shards"), "train", colour_samples(40), samples_per_shard=10)
    overrides = [
        f"paths.output_dir={folder}/run", "data=webdataset", f"data.train_shards='{folder}/shards/train-{{00000..00003}}.tar'",
        "data.batch_size=8", "data.num_workers=0", "model=test", "trainer.max_steps=3", "logger=csv",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        run(compose("train", overrides=overrides))
    return str(folder / "run" / "checkpoints" / "last.ckpt")
