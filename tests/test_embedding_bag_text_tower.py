"""docs/extending.md's worked example of a new text tower: its code and config are the package's, its
command trains, the checkpoint loads, and the tower cannot see word order."""

import os
import re

import torch
from readme_code import python_code, readme_section

import clip_train
from clip_train.model import EmbeddingBagTextTower
from clip_train.paths import CONFIG_DIR
from clip_train.train import run

SECTION = "## A new text tower"
PACKAGE = os.path.dirname(clip_train.__file__)


def test_readme_shows_the_real_class_and_config():
    with open(os.path.join(PACKAGE, "model", "embedding_bag_text_tower.py")) as f:
        assert python_code(SECTION) in f.read()
    (config,) = re.findall(r"```yaml\n(.*?)```", readme_section(SECTION), flags=re.S)
    with open(os.path.join(CONFIG_DIR, "model", "text_tower", "embedding_bag.yaml")) as f:
        assert config == f.read()


def test_readme_command_trains_and_the_checkpoint_loads(compose_config, colour_shards, tmp_path):
    (command,) = re.findall(r"```bash\n(.*?)\n```", readme_section(SECTION), flags=re.S)
    overrides = command.removeprefix("python -m clip_train ").split()
    cfg = compose_config(
        *overrides, "model=test", "data=webdataset", f"data.train_shards='{colour_shards}'", "data.num_workers=0",
        "data.batch_size=8", "trainer.max_steps=2", "eval=none",
    )  # fmt: skip
    metrics = run(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    model = clip_train.load(str(tmp_path / "run" / "checkpoints" / "last.ckpt"))
    assert isinstance(model.text_tower, EmbeddingBagTextTower) and model.recipe.version == 2
    assert model.encode_text(["a red square", "a blue circle"]).shape == (2, cfg.model.embed_dim)


def test_word_order_is_invisible():
    tower = EmbeddingBagTextTower(embed_dim=8, vocab_size=50, width=16).eval()
    ids = torch.tensor([[3, 4, 5, 6, 0, 0], [6, 5, 3, 4, 9, 9]])  # the second: same words shuffled, other padding
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0]])
    with torch.no_grad():
        features = tower(ids, mask)
    assert torch.equal(features[0], features[1])  # exactly: a compositional comparison is a tie
