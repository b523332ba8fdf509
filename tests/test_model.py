"""Towers, the dual encoder, the temperature clamp and the weight-decay groups."""

import math

import pytest
import torch
from helpers import small_coca, small_encoder
from hydra.utils import instantiate
from transformers import BertConfig, BertModel

from clip_train.model import CausalTextTower, DualEncoder, ImageTower, PretrainedTextTower
from clip_train.model.text_tower import last_token
from clip_train.training.optim import cosine_with_warmup, parameter_groups, scale_learning_rates


def test_encoders_give_unit_vectors_of_embed_dim():
    model = small_encoder()
    images = torch.randn(3, 3, 32, 32)
    input_ids = torch.randint(1, 50, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[0, 5:] = 0
    image_features, text_features = model({"image": images, "input_ids": input_ids, "attention_mask": mask})
    assert image_features.shape == text_features.shape == (3, 16)
    torch.testing.assert_close(image_features.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(text_features.norm(dim=-1), torch.ones(3))


def test_causal_text_tower_equals_attention_with_the_padding_mask():
    """Dropping the padding mask (for speed) must not change the pooled end-of-text state."""
    tower = CausalTextTower(8, vocab_size=50, width=32, layers=2, heads=2, context_length=12).eval()
    ids = torch.randint(1, 50, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[0, 5:], mask[1, 9:] = 0, 0
    masked = tower.transformer(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(tower(ids, mask), tower.projection(last_token(masked, mask)))


def test_causal_text_pooling_ignores_tokens_after_end_of_text():
    tower = CausalTextTower(8, vocab_size=50, width=32, layers=2, heads=2, context_length=12).eval()
    ids = torch.randint(1, 50, (1, 12))
    mask = torch.zeros(1, 12, dtype=torch.long)
    mask[0, :6] = 1
    changed = ids.clone()
    changed[0, 6:] = (changed[0, 6:] % 49) + 1  # different padding content
    torch.testing.assert_close(tower(ids, mask), tower(changed, mask))
    assert not torch.allclose(tower(ids, mask), tower(ids, torch.ones_like(mask)))


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert")
    config = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    BertModel(config).save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_pretrained_text_tower_loads_local_folder_and_pools(bert_folder, pooling):
    tower = PretrainedTextTower(bert_folder, embed_dim=8, vocab_size=60, pooling=pooling).eval()
    ids = torch.randint(0, 60, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    hidden = tower.transformer(input_ids=ids, attention_mask=mask).last_hidden_state
    if pooling == "cls":
        expected = hidden[:, 0]
    else:
        expected = torch.stack([hidden[0].mean(0), hidden[1, :4].mean(0)])
    torch.testing.assert_close(tower(ids, mask), tower.projection(expected))


def test_pretrained_text_tower_rejects_a_larger_tokenizer(bert_folder):
    with pytest.raises(ValueError, match="tokenizer has 61 tokens"):
        PretrainedTextTower(bert_folder, embed_dim=8, vocab_size=61)


def test_tower_width_must_match_embed_dim():
    with pytest.raises(ValueError, match="model.text_tower projects to 8"):
        DualEncoder(
            ImageTower("test_vit", embed_dim=16, image_size=32),
            CausalTextTower(8, vocab_size=50, width=32, layers=1, heads=2, context_length=12),
            embed_dim=16,
            image_size=32,
            context_length=12,
        )


def test_logit_scale_starts_at_clip_init_and_clamps_at_ln_100():
    model = small_encoder()
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        model.logit_scale.fill_(7.0)
    model.clamp_logit_scale_()
    assert model.logit_scale.item() == pytest.approx(math.log(100))


def _groups_by_name(model) -> tuple[set[str], set[str]]:
    """(decayed names, not-decayed names) of `parameter_groups(model)`, checked to partition the parameters."""
    decayed, not_decayed = parameter_groups(model)
    assert not_decayed["weight_decay"] == 0.0 and "weight_decay" not in decayed
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)] for p in decayed["params"]}
    skip = {names[id(p)] for p in not_decayed["params"]}
    assert skip.isdisjoint(decay) and skip | decay == set(names.values())
    return decay, skip


def _expected_skip(model) -> set[str]:
    """OpenCLIP's rule, written out: every tensor of fewer than 2 dims (biases, gains, LayerScale, the
    temperature), plus the embeddings: token and position tables, the ViT's position embedding and class token."""
    embeddings = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)}
    assert len(embeddings) == 2  # the text tower's token and position tables
    named = {"image_tower.trunk.pos_embed", "image_tower.trunk.cls_token"}
    return {n for n, p in model.named_parameters() if p.ndim < 2} | embeddings | named


def test_weight_decay_groups():
    model = small_encoder()
    decay, skip = _groups_by_name(model)
    assert skip == _expected_skip(model)
    assert "logit_scale" in skip and "image_tower.trunk.blocks.0.norm1.weight" in skip
    assert "image_tower.trunk.blocks.0.attn.qkv.weight" in decay
    assert "image_tower.projection.weight" in decay and "text_tower.projection.weight" in decay


def test_weight_decay_spares_layer_scale_gains():
    model = small_encoder(init_values=1e-5)  # timm LayerScale: a (width,) gain `gamma` after each branch
    decay, skip = _groups_by_name(model)
    assert skip == _expected_skip(model)
    assert "image_tower.trunk.blocks.0.ls1.gamma" in skip


def test_weight_decay_spares_the_coca_decoder_attention_biases():
    model = small_coca()
    decay, skip = _groups_by_name(model)
    assert skip == _expected_skip(model)
    assert "decoder.layers.0.self_attn.in_proj_bias" in skip and "decoder.layers.0.multihead_attn.in_proj_bias" in skip
    assert "decoder.layers.0.self_attn.in_proj_weight" in decay and "lm_head.weight" in decay


def test_frozen_parameters_are_left_out_of_the_optimizer():
    model = small_encoder()
    model.image_tower.requires_grad_(False)
    grouped = {id(p) for group in parameter_groups(model) for p in group["params"]}
    assert all(id(p) not in grouped for p in model.image_tower.parameters())


def test_the_temperature_learns_at_its_own_scaled_rate_through_the_schedule():
    model = small_encoder()
    model.register_parameter("logit_bias", torch.nn.Parameter(torch.tensor(-10.0)))
    groups = parameter_groups(model, temperature_lr_scale=20.0)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in groups[2]["params"]} == {"logit_scale", "logit_bias"}
    assert all(names[id(p)] not in ("logit_scale", "logit_bias") for group in groups[:2] for p in group["params"])
    optimizer = scale_learning_rates(torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.2))
    scheduler = cosine_with_warmup(optimizer, warmup_steps=2, total_steps=10)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([5e-4, 5e-4, 1e-2])  # warm-up step 1 of 2
    assert groups[2]["weight_decay"] == 0.0
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    rates = [g["lr"] for g in optimizer.param_groups]
    assert rates[2] == pytest.approx(20 * rates[0]) and rates[0] < 1e-3
    assert len(parameter_groups(model)) == 2  # scale 1: the two weight-decay groups only


def test_cosine_schedule_with_linear_warmup():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = cosine_with_warmup(optimizer, warmup_steps=4, total_steps=14, final_lr_ratio=0.1)
    rates = []
    for _ in range(16):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    # cosine over the remaining 10 steps: 0.1 + 0.9 * (1 + cos(pi * t / 10)) / 2
    assert rates[4:] == pytest.approx([0.1 + 0.45 * (1 + math.cos(math.pi * min(t, 10) / 10)) for t in range(12)])


@pytest.mark.parametrize("name", ["cosine", "const", "const_cooldown"])
def test_schedules_give_openclips_learning_rates(compose_config, name):
    """Our schedules (configs/optim/scheduler/) against OpenCLIP's own scheduler functions, step by step."""
    schedulers = pytest.importorskip("open_clip_train.scheduler")
    cooldown = ["optim.scheduler.cooldown_steps=5", "optim.scheduler.cooldown_power=0.5"] if name == "const_cooldown" else []
    cfg = compose_config(f"optim/scheduler={name}", "optim.scheduler.warmup_steps=3", "optim.optimizer.lr=0.01", *cooldown)
    ours_optimizer = instantiate(cfg.optim.optimizer)(params=[torch.nn.Parameter(torch.zeros(1))], fused=False)
    ours = instantiate(cfg.optim.scheduler)(ours_optimizer, total_steps=12)
    theirs_optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    theirs = {
        "cosine": lambda: schedulers.cosine_lr(theirs_optimizer, 0.01, 3, 12),
        "const": lambda: schedulers.const_lr(theirs_optimizer, 0.01, 3, 12),
        "const_cooldown": lambda: schedulers.const_lr_cooldown(theirs_optimizer, 0.01, 3, 12, 5, 0.5, 0.0),
    }[name]()
    for step in range(12):
        assert ours.get_last_lr()[0] == pytest.approx(theirs(step), abs=1e-12), step
        ours_optimizer.step()
        ours.step()
