"""CoCa: the caption loss against per-caption references, greedy and beam search against brute force,
the caption scores, and a trained checkpoint through load, export and the CLI (exact accumulation of
its weighted objective: tests/test_objectives.py)."""

import itertools
import json
import math
import subprocess
import sys

import pytest
import torch
from helpers import colour_samples, make_batch, small_coca

import clip_train
from clip_train.eval.captioning import caption_metrics
from clip_train.export import export
from clip_train.model import CoCa, ImageTower
from clip_train.train import run

BOS, EOS = 1, 2


def test_caption_loss_equals_per_caption_reference_and_ignores_padding():
    model, batch = small_coca().double().eval(), make_batch(size=4)
    nll = model.training_forward(batch).caption_nll
    for row in range(4):
        length = int(batch["attention_mask"][row].sum())
        ids = batch["input_ids"][row : row + 1, :length]  # the caption alone, no padding at all
        _, memory = model.encode_image_and_memory(batch["image"][row : row + 1])
        log_probs = model.next_token_logits(model.text_states(ids), memory).log_softmax(dim=-1)[0]
        reference = -sum(log_probs[t, ids[0, t + 1]] for t in range(length - 1)) / (length - 1)
        torch.testing.assert_close(nll[row], reference)
    padded = dict(batch, input_ids=batch["input_ids"].masked_fill(batch["attention_mask"] == 0, 7))
    torch.testing.assert_close(model.training_forward(padded).caption_nll, nll)


@torch.no_grad()
def test_greedy_and_beam_search_against_brute_force():
    vocab, max_length = 4, 4  # up to 3 generated tokens over 4 tokens: 40 hypotheses, EOS only last
    model = small_coca(vocab).eval()
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    every = [list(s) for n in range(1, max_length) for s in itertools.product(range(vocab), repeat=n)
             if EOS not in s[:-1] and (s[-1] == EOS or n == max_length - 1)]  # fmt: skip
    beam = model.generate(images, BOS, EOS, max_length=max_length, beams=len(every))
    greedy = model.generate(images, BOS, EOS, max_length=max_length)
    padded = torch.tensor([[BOS, *s] + [EOS] * (max_length - 1 - len(s)) for s in every])  # causal: padding after is inert
    for i in range(3):
        _, memory = model.encode_image_and_memory(images[i : i + 1])
        log_probs = model.next_token_logits(model.text_states(padded), memory.expand(len(every), -1, -1)).log_softmax(dim=-1)
        means = [sum(float(log_probs[k, t, s[t]]) for t in range(len(s))) / len(s) for k, s in enumerate(every)]
        best = every[max(range(len(every)), key=means.__getitem__)]
        assert beam[i] == [t for t in best if t != EOS]
        prefix = []  # greedy: the arg-max token, step by step
        while len(prefix) < max_length - 1 and EOS not in prefix:
            logits = model.next_token_logits(model.text_states(torch.tensor([[BOS, *prefix]])), memory)[0, -1]
            prefix.append(int(logits.argmax()))
        assert greedy[i] == [t for t in prefix if t != EOS]
    with pytest.raises(ValueError, match="max_length=1"):
        model.generate(images, BOS, EOS, max_length=1)


def test_caption_metrics_reward_matching_captions():
    references = ["a red circle on the left", "two blue squares at the top", "a green cross in the middle"]
    perfect = caption_metrics(references, references)
    assert perfect["bleu4"] == pytest.approx(1.0) and perfect["cider"] == pytest.approx(10.0)  # CIDEr-D's ×10
    wrong = caption_metrics(["a yellow diamond", "a yellow diamond", "a yellow diamond"], references)
    assert wrong["bleu4"] == 0.0 and wrong["cider"] < 0.5


def test_coca_refuses_a_bidirectional_text_tower():
    with pytest.raises(ValueError, match="must be a CausalTextTower"):
        CoCa(ImageTower("test_vit", embed_dim=16, image_size=32), torch.nn.Identity(), 16, 32, 12, 1, 2)


@pytest.fixture(scope="module")
def coca_checkpoint(tmp_path_factory):
    """A few steps of coca_test with SigLIP as its contrastive term (so the bias must round-trip too) on colour squares."""
    from hydra import compose, initialize_config_dir

    from clip_train.data.shard_writer import write_shards
    from clip_train.paths import CONFIG_DIR

    folder = tmp_path_factory.mktemp("coca")
    write_shards(str(folder / "shards"), "train", colour_samples(40), samples_per_shard=10)
    overrides = [
        f"paths.output_dir={folder}/run", "data=webdataset", f"data.train_shards='{folder}/shards/train-{{00000..00003}}.tar'",
        f"data.val_shards='{folder}/shards/train-00000.tar'", "data.batch_size=8", "data.num_workers=0", "model=coca_test",
        "loss=coca_siglip", "trainer.max_steps=3", "trainer.num_sanity_val_steps=0", "logger=[csv,tensorboard]",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        metrics = run(compose("train", overrides=overrides))
    return str(folder / "run" / "checkpoints" / "last.ckpt"), metrics, folder


@pytest.mark.slow
def test_trained_coca_logs_caption_scores_and_round_trips_export_and_cli(coca_checkpoint, tmp_path):
    checkpoint, metrics, folder = coca_checkpoint
    assert {"val/bleu4", "val/cider", "train/caption_loss", "train/contrastive_loss", "train/logit_bias"} <= set(metrics)
    logged = [json.loads(line) for line in (folder / "run" / "csv" / "captions.jsonl").read_text().splitlines()]
    assert logged[-1]["step"] == 3 and len(logged[-1]["examples"]) == 8
    assert all(reference.startswith("a ") for reference, _ in logged[-1]["examples"])
    from_checkpoint = clip_train.load(checkpoint)
    assert from_checkpoint.logit_bias is not None
    export(from_checkpoint, str(tmp_path / "export"))
    from_export = clip_train.load(str(tmp_path / "export"))
    images = [sample.image for sample in colour_samples(3)]
    for beams in (1, 2):
        captions = from_checkpoint.caption(images, beams=beams, max_length=8)
        assert len(captions) == 3 and all(isinstance(c, str) for c in captions)
        assert from_export.caption(images, beams=beams, max_length=8) == captions
    torch.testing.assert_close(from_export.encode_image(images), from_checkpoint.encode_image(images), rtol=0, atol=0)

    image_dir = tmp_path / "images"
    image_dir.mkdir()
    for i, image in enumerate(images):
        image.save(image_dir / f"{i}.png")
    (image_dir / "notes.txt").write_text("not an image")
    done = subprocess.run(
        [sys.executable, "-m", "clip_train.caption", f"checkpoint={tmp_path / 'export'}", f"images={image_dir}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    printed = json.loads(done.stdout)
    assert printed == {str(image_dir / f"{i}.png"): c for i, c in enumerate(from_export.caption(images))}
    assert math.isfinite(metrics["val/cider"])
