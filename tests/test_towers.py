"""Every tower config meets the `Tower` contract, as timm tests every registered model.

Each text tower of configs/model/text_tower/ and each image tower of configs/model/*.yaml is
built from the real config (at test sizes: the ViT-B presets keep their architecture but get 2
blocks 32 wide) and checked member by member: shapes of `forward` and `forward_tokens`, the
`no_weight_decay` names, what `lock` freezes, and that gradient checkpointing changes nothing.
"""

import copy

import pytest
import torch
from hydra.utils import instantiate
from models import small_encoder
from test_configs import options
from transformers import BertConfig, BertModel

from clip_train.model import DualEncoder
from clip_train.model.locking import NORM_TYPES
from clip_train.model.tower import Tower, missing_members

SMALL_IMAGE = ["+model.image_tower.depth=2", "+model.image_tower.num_heads=2", "+model.image_tower.width=32"]
SMALL_TEXT = {"causal": ["model.text_tower.width=32", "model.text_tower.layers=2", "model.text_tower.heads=2"]}
VOCAB = 100


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert")
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    BertModel(config).save_pretrained(folder)
    return str(folder)


def trainable(tower: torch.nn.Module) -> set[str]:
    return {name for name, p in tower.named_parameters() if p.requires_grad}


def norm_parameters(tower: torch.nn.Module) -> set[str]:
    return {
        f"{prefix}.{name}" if prefix else name
        for prefix, module in tower.named_modules()
        if isinstance(module, NORM_TYPES)
        for name, _ in module.named_parameters(recurse=False)
    }


def outputs_and_gradients(tower: torch.nn.Module, inputs: tuple) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    tower.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # the same dropout masks in both runs
    output = tower(*inputs)
    output.square().sum().backward()
    return output.detach(), {name: p.grad.clone() for name, p in tower.named_parameters() if p.grad is not None}


def check_tower(tower: torch.nn.Module, inputs: tuple, embed_dim: int) -> None:
    assert missing_members(tower) == [] and isinstance(tower, Tower)
    batch = inputs[0].shape[0]
    tower.eval()
    with torch.no_grad():
        features = tower(*inputs)
        same_features, tokens = tower.forward_tokens(*inputs)
    assert features.shape == (batch, embed_dim) == (batch, tower.embed_dim)
    torch.testing.assert_close(same_features, features)
    assert tokens.ndim == 3 and tokens.shape[0] == batch and tokens.shape[2] == tower.token_width

    names = dict(tower.named_parameters())
    assert tower.no_weight_decay() <= set(names), tower.no_weight_decay() - set(names)

    tower.train()
    expected_output, expected_gradients = outputs_and_gradients(tower, inputs)
    tower.set_grad_checkpointing(True)
    output, gradients = outputs_and_gradients(tower, inputs)
    torch.testing.assert_close(output, expected_output)
    assert gradients.keys() == expected_gradients.keys()
    for name in gradients:
        torch.testing.assert_close(gradients[name], expected_gradients[name], msg=name)

    locked, one_unlocked, norms_free = (copy.deepcopy(tower) for _ in range(3))
    locked.lock(0)
    one_unlocked.lock(1)
    norms_free.lock(0, freeze_norm=False)
    assert trainable(locked), "lock must leave the projection into the shared space training"
    assert trainable(locked) < trainable(one_unlocked) <= set(names)
    norms = norm_parameters(tower)
    assert not norms & trainable(locked)  # freeze_norm=True, the default, freezes them
    assert trainable(norms_free) == trainable(locked) | norms
    frozen = set(names) - trainable(locked)
    locked.zero_grad(set_to_none=True)
    locked(*inputs).square().sum().backward()
    assert all(p.grad is None for name, p in locked.named_parameters() if name in frozen)


def text_inputs(context_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1, VOCAB, (2, context_length), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, context_length // 2 :] = 0  # the second caption is padded
    return ids, mask


@pytest.mark.parametrize("option", options("model/text_tower"))
def test_text_tower_configs_meet_the_contract(compose_config, bert_folder, option):
    overrides = SMALL_TEXT.get(option.split("_")[0], [])
    if option == "pretrained":
        overrides = [f"model.text_tower.name_or_path={bert_folder}"]
    cfg = compose_config("model=test", f"model/text_tower={option}", *overrides)
    tower = instantiate(cfg.model.text_tower, vocab_size=VOCAB)
    check_tower(tower, text_inputs(cfg.model.context_length), cfg.model.embed_dim)


@pytest.mark.parametrize("preset", [name for name in options("model") if name != "clip_pretrained"])  # see test_hf_clip_import
def test_image_tower_configs_meet_the_contract(compose_config, preset):
    cfg = compose_config(f"model={preset}", *SMALL_IMAGE)
    tower = instantiate(cfg.model.image_tower)
    size = cfg.model.image_size
    check_tower(tower, (torch.randn(2, 3, size, size),), cfg.model.embed_dim)


def test_dual_encoder_names_a_missing_member():
    encoder = small_encoder()
    with pytest.raises(TypeError, match=r"model.text_tower \(Identity\) is not a tower: it lacks embed_dim, token_width"):
        DualEncoder(encoder.image_tower, torch.nn.Identity(), embed_dim=16, image_size=32, context_length=12)
