"""A misspelt key on the command line, in any config group, is named with the closest existing key before
anything runs (Hydra alone says "not in struct" and advises `+`, which would add the typo)."""

import pytest

from clip_train.override_check import unknown_key_message

MISSPELT = {
    "data.batch_sze=8": "Did you mean 'data.batch_size'?",
    "model.embed_dm=32": "Did you mean 'model.embed_dim'?",
    "model.image_towr.lock=true": "Did you mean 'model.image_tower'?",
    "loss.text_hard_negative=2": "Did you mean 'loss.text_hard_negatives'?",
    "optim.lr=1e-3": "Did you mean 'optim.optimizer.lr'?",
    "optim.optimizer.weight_decy=0.1": "Did you mean 'optim.optimizer.weight_decay'?",
    "trainer.max_step=5": "Did you mean 'trainer.max_steps'?",
}


@pytest.mark.parametrize("override", sorted(MISSPELT))
def test_a_misspelt_key_in_every_group_gets_did_you_mean(override):
    message = unknown_key_message("train", ["-m", override, "loss=infonce,siglip", "model=test"])
    key = override.split("=")[0]
    assert message.startswith(f"Unknown config key '{key}'") and MISSPELT[override] in message


def test_existing_keys_and_other_errors_are_left_to_hydra():
    assert unknown_key_message("train", ["data.batch_size=8", "+data.extra=1", "--cfg", "job"]) is None
    assert unknown_key_message("train", ["hydra.run.dirr=x"]) is None  # Hydra's own node: Hydra's message
    assert "Did you mean 'checkpoint'?" in unknown_key_message("evaluate", ["chekpoint=a.ckpt"])  # a top-level key
