"""A transformers text tower with a pooler (BERT) under a real 2-process DDP fit on the CPU.

We pool over `last_hidden_state`, so BERT's pooler never gets a gradient. DDP without
`find_unused_parameters` (what `trainer=ddp` builds) then fails on its second step with "Expected to
have finished reduction in the prior iteration" unless such parameters are not trainable; LiT-style
locking with unlocked layers must not make them trainable again.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import BertConfig, BertModel

from clip_train.model import PretrainedTextTower


def _save_bert(folder) -> str:
    """A random-init 2-layer BERT with a pooler, saved as a transformers folder (offline)."""
    config = BertConfig(vocab_size=400, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    BertModel(config).save_pretrained(folder)
    return str(folder)


def test_pooler_is_not_trainable_with_or_without_unlocked_layers(tmp_path):
    bert = _save_bert(tmp_path / "bert")
    for options in ({}, {"lock": True, "unlocked_layers": 1}):
        tower = PretrainedTextTower(bert, embed_dim=8, vocab_size=400, **options)
        ids, mask = torch.randint(0, 400, (2, 6)), torch.ones(2, 6, dtype=torch.long)
        tower(ids, mask).sum().backward()
        trainable = {name for name, p in tower.named_parameters() if p.requires_grad}
        with_gradient = {name for name, p in tower.named_parameters() if p.grad is not None}
        assert trainable == with_gradient, options
        assert "transformer.encoder.layer.1.output.dense.weight" in trainable
        assert not any("pooler" in name for name in trainable)


@pytest.mark.slow
@pytest.mark.parametrize("lock", [[], ["model.text_tower.lock=true", "model.text_tower.unlocked_layers=1"]], ids=["", "lock"])
def test_two_process_ddp_fit_with_a_bert_text_tower(tmp_path, lock):
    bert = _save_bert(tmp_path / "bert")
    done = subprocess.run(
        [sys.executable, "-m", "clip_train", "debug=fast", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
         "trainer.precision=32-true", "model/text_tower=pretrained", f"model.text_tower.name_or_path={bert}",
         "data.tokenizer_vocab_size=300", f"hydra.run.dir={tmp_path}/run", *lock],
        capture_output=True, text=True, env=os.environ, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train/samples_seen"] == 6 * 16 * 2 and metrics["train/skipped_steps"] == 0
