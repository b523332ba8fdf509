"""The Q-Former connector: its shapes for any number of image tokens, one layer against a hand computation, its
indifference to the image tokens' order, and `python -m clip_train.vlm connector=qformer` training a stage whose
checkpoint `clip_train.load_vlm` reloads into the same model with the same answers."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from tiny_vlm import read_test_set, tiny_vlm

import clip_train
from clip_train.vlm.qformer import QFormerConnector
from clip_train.vlm.vqa import evaluate_questions

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("num_image_tokens", [1, 5, 17, 64])
def test_any_number_of_image_tokens_gives_num_queries_lm_tokens(num_image_tokens):
    torch.manual_seed(0)
    connector = QFormerConnector(image_width=24, lm_width=40, num_queries=6, num_layers=2, width=16, num_heads=2)
    tokens = torch.randn(3, num_image_tokens, 24)
    out = connector(tokens)
    assert out.shape == (3, 6, 40)
    out.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in connector.parameters())  # queries included


def test_the_language_model_sees_num_queries_image_tokens_whatever_the_tower_gives():
    for with_cls in (False, True):
        model, tokenizer = tiny_vlm(with_cls=with_cls)
        model.connector = QFormerConnector(model.vision.width, 32, num_queries=7, width=16, num_heads=2)
        ids = torch.tensor([tokenizer("<image> what color is the square?")["input_ids"]])
        embeds, mask, _ = model.splice(ids, torch.ones_like(ids), torch.randn(1, 3, 32, 32))
        assert embeds.shape[1] == mask.shape[1] == ids.shape[1] - 1 + 7


def _layer_norm(x, norm):
    centred = x - x.mean(-1, keepdim=True)
    return centred / torch.sqrt(centred.square().mean(-1, keepdim=True) + norm.eps) * norm.weight + norm.bias


def _attention(mha, queries, keys_values):
    """nn.MultiheadAttention by hand: separate projections, one head at a time, softmax as exp / sum."""
    if mha.in_proj_weight is not None:
        wq, wk, wv = mha.in_proj_weight.chunk(3)
    else:
        wq, wk, wv = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
    bq, bk, bv = mha.in_proj_bias.chunk(3)
    q, k, v = queries @ wq.T + bq, keys_values @ wk.T + bk, keys_values @ wv.T + bv
    size = mha.head_dim
    heads = []
    for h in range(mha.num_heads):
        part = slice(h * size, (h + 1) * size)
        scores = q[..., part] @ k[..., part].transpose(-1, -2) / math.sqrt(size)
        weights = torch.exp(scores - scores.amax(-1, keepdim=True))
        heads.append((weights / weights.sum(-1, keepdim=True)) @ v[..., part])
    return torch.cat(heads, dim=-1) @ mha.out_proj.weight.T + mha.out_proj.bias


def test_one_layer_equals_a_hand_computation():
    torch.manual_seed(0)
    connector = QFormerConnector(image_width=12, lm_width=10, num_queries=5, num_layers=1, width=8, num_heads=2).double()
    with torch.no_grad():  # every weight random, norms included, so a swapped or skipped one shows
        for parameter in connector.parameters():
            parameter.normal_(0, 0.5)
    image = torch.randn(2, 9, 12, dtype=torch.float64)
    layer = connector.layers[0]
    q = connector.queries.expand(2, -1, -1)
    normed = _layer_norm(q, layer.self_norm)
    q = q + _attention(layer.self_attention, normed, normed)
    q = q + _attention(layer.cross_attention, _layer_norm(q, layer.cross_norm), _layer_norm(image, layer.image_norm))
    hidden = _layer_norm(q, layer.mlp_norm) @ layer.mlp[0].weight.T + layer.mlp[0].bias
    hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))
    q = q + hidden @ layer.mlp[2].weight.T + layer.mlp[2].bias
    expected = _layer_norm(q, connector.norm) @ connector.projection.weight.T + connector.projection.bias
    with torch.no_grad():
        torch.testing.assert_close(connector(image), expected, rtol=0, atol=1e-6)


def test_the_output_ignores_the_image_tokens_order_but_not_their_content():
    """No positions are added to the image tokens, and attention sums over keys: permuting them changes nothing.
    Each sample of a batch is read alone."""
    torch.manual_seed(0)
    connector = QFormerConnector(image_width=12, lm_width=10, num_queries=4, num_layers=2, width=8, num_heads=2).double()
    image = torch.randn(3, 11, 12, dtype=torch.float64)
    with torch.no_grad():
        out = connector(image)
        torch.testing.assert_close(connector(image[:, torch.randperm(11)]), out, rtol=0, atol=1e-6)
        torch.testing.assert_close(connector(image[1:2]), out[1:2], rtol=0, atol=1e-6)
        changed = image.clone()
        changed[:, 3, 0] += 1  # one feature: adding to all of a token's features is what its LayerNorm removes
        assert (connector(changed) - out).abs().amax() > 1e-3


def test_a_width_the_heads_do_not_divide_is_refused_by_name():
    with pytest.raises(ValueError, match=r"connector.width=10 must be a multiple of connector.num_heads=4"):
        QFormerConnector(image_width=8, lm_width=8, width=10, num_heads=4)


@pytest.mark.slow
def test_the_command_trains_a_qformer_stage_that_load_vlm_reloads(trained_checkpoint, tmp_path):
    """The shipped `connector=qformer` (its defaults) composed by Hydra through the real command."""
    overrides = [
        "connector=qformer", "stage=instruct", f"vision.checkpoint={trained_checkpoint}", f"paths.output_dir={tmp_path}",
        "data.scenes.num_train=20", "data.scenes.num_test=6", "data.batch_size=4", "stages.instruct.steps=3",
        f"paths.cache_dir={tmp_path}/cache", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=REPO)
    done = subprocess.run([sys.executable, "-m", "clip_train.vlm", *overrides], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = tmp_path / "instruct" / "checkpoints" / "last.ckpt"
    vlm = clip_train.load_vlm(str(saved))
    assert isinstance(vlm.model.connector, QFormerConnector) and vlm.model.connector.queries.shape == (32, 128)
    state = torch.load(saved, weights_only=True)["state_dict"]
    for name, value in vlm.model.state_dict().items():
        torch.testing.assert_close(value, state[f"model.{name}"], rtol=0, atol=0, msg=name)
    with open(tmp_path / "metrics.json") as f:
        measured = json.load(f)
    test = read_test_set(vlm.recipe["test_questions"])
    rescored = evaluate_questions(vlm.model, vlm.tokenizer, test, vlm.preprocess)
    assert rescored == {name: value for name, value in measured.items() if not name.startswith("time/")}
