"""A VLM stage under `trainer.precision=bf16-mixed` on the CPU, with either connector: the language model really
computes in bfloat16, and the first step's loss is finite and within bfloat16's rounding of the fp32 loss on the
same batch (same weights, same data order). And a stage trained in `bf16-true` is scored afterwards."""

import json
import os

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from tiny_vlm import read_test_set, tiny_vlm

from clip_train.data.transforms import CLIP_MEAN, CLIP_STD, eval_transform
from clip_train.vlm.conversation_source import ConversationSource
from clip_train.vlm.qformer import QFormerConnector
from clip_train.vlm.stages import train_stage
from clip_train.vlm.text import prompt_ids
from clip_train.vlm.vqa import evaluate_questions

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}
SETTINGS = OmegaConf.create(
    {"steps": 2, "lr": 3e-3, "weight_decay": 0.01, "warmup_steps": 1, "lm": "full", "lora_rank": 8,
     "checkpoint_every_n_steps": None}
)  # fmt: skip
# bfloat16 keeps 8 significant bits: one rounding moves a number by at most 2^-9 of itself. The loss is a
# log-sum-exp of logits (autocast computes it in fp32) minus the target's logit, so it moves by at most twice the
# largest change of a logit; the logits come through a dozen bf16 matmuls of this 2-layer LM, each rounding
# its result by <= 2^-9, with random signs. A loss within 2^-8 of itself (0.4%, ~0.03 at the loss of ~7 here)
# is that; a model computing in fp32 where bf16 was asked is caught by the dtype check, not by this bound.
BF16_RTOL = 2**-8


class FirstLoss(L.Callback):
    """The loss of the first training step, and the dtype of the LM's logits in it."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_index):
        if batch_index == 0:
            head = pl_module.model.language_model.get_output_embeddings()
            self.hook = head.register_forward_hook(lambda module, inputs, output: setattr(self, "dtype", output.dtype))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_index):
        if batch_index == 0:
            self.loss = outputs["loss"].item()
            self.hook.remove()


def _train(folder, precision: str, connector: str):
    """(FirstLoss, model, tokenizer, LLaVA JSON path) after a 2-step stage at `precision` on 6 plain squares."""
    records = []
    for index in range(6):
        colour = list(COLOURS)[index % 3]
        Image.new("RGB", (32, 32), COLOURS[colour]).save(os.path.join(folder, f"{index}.png"))
        turns = [{"from": "human", "value": "<image>\nwhat color is the square?"}, {"from": "gpt", "value": colour}]
        records.append({"id": str(index), "image": f"{index}.png", "conversations": turns, "question_types": ["color"]})
    path = os.path.join(folder, "squares.json")
    with open(path, "w") as f:
        json.dump(records, f)
    model, tokenizer = tiny_vlm()
    if connector == "qformer":
        torch.manual_seed(2)
        model.connector = QFormerConnector(model.vision.width, 32, num_queries=4, width=16, num_heads=2)
    first = FirstLoss()
    trainer_settings = {"accelerator": "cpu", "enable_progress_bar": False, "precision": precision}
    source = ConversationSource.of(path, "data.train")
    train_stage("align", model, tokenizer, source, eval_transform(32, CLIP_MEAN, CLIP_STD), SETTINGS,
                trainer_settings, os.path.join(folder, precision), batch_size=3, num_workers=0, callbacks=(first,))  # fmt: skip
    return first, model, tokenizer, path


@pytest.mark.slow
@pytest.mark.parametrize("connector", ["mlp2x", "qformer"])
def test_a_bf16_stage_starts_at_the_fp32_loss(tmp_path, connector):
    full = _train(tmp_path, "32-true", connector)[0]
    half = _train(tmp_path, "bf16-mixed", connector)[0]
    assert (full.dtype, half.dtype) == (torch.float32, torch.bfloat16)
    assert torch.isfinite(torch.tensor(half.loss)) and half.loss != full.loss
    assert half.loss == pytest.approx(full.loss, rel=BF16_RTOL)


@pytest.mark.slow
def test_a_stage_trained_in_bf16_true_is_scored_on_fp32_pixels(tmp_path):
    """bf16-true leaves the weights in bf16 (Lightning converts the module), and the scoring after the stage
    preprocesses images to fp32: the tower takes them in its own dtype, as Lightning fed them in training."""
    _, model, tokenizer, path = _train(tmp_path, "bf16-true", "mlp2x")
    assert next(model.vision.parameters()).dtype == torch.bfloat16
    pixels = eval_transform(32, CLIP_MEAN, CLIP_STD)(Image.open(tmp_path / "0.png"))[None]
    ids = torch.tensor([prompt_ids(tokenizer, "what color is the square?", with_image=True)])
    with torch.no_grad():
        got = model.splice(ids, torch.ones_like(ids), pixels)[0]
        expected = model.splice(ids, torch.ones_like(ids), pixels.bfloat16())[0]
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    scores = evaluate_questions(model.eval(), tokenizer, read_test_set(path), eval_transform(32, CLIP_MEAN, CLIP_STD))
    assert set(scores) == {"vqa/color", "vqa/mean"}
