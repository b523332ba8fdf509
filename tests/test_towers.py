"""Every tower config meets the `Tower` contract, as timm tests every registered model.

Each text tower of configs/model/text_tower/ and each image tower of configs/model/*.yaml is
built from the real config (at test sizes: the ViT-B presets keep their architecture but get 2
blocks 32 wide) and checked member by member: shapes of `forward` and `forward_tokens`, the
`no_weight_decay` names, what `lock` freezes, and that gradient checkpointing changes nothing.
"""

import pytest
import torch
from helpers import check_tower, options, small_encoder
from hydra.utils import instantiate
from transformers import BertConfig, BertModel

from clip_train.model import DualEncoder

SMALL_IMAGE = ["+model.image_tower.depth=2", "+model.image_tower.num_heads=2", "+model.image_tower.width=32"]
SMALL_CNN = ["+model.image_tower.depths=[1,1,1,1]", "+model.image_tower.dims=[8,16,32,64]"]  # timm ConvNeXt's arguments
SMALL_TEXT = {
    "causal": ["model.text_tower.width=32", "model.text_tower.layers=2", "model.text_tower.heads=2"],
    "siglip": ["model.text_tower.width=32", "model.text_tower.layers=2", "model.text_tower.heads=2"],
    "xlm": [f"model.text_tower.transformers_config.{key}={value}" for key, value in
            (("hidden_size", 32), ("num_hidden_layers", 2), ("num_attention_heads", 2), ("intermediate_size", 64))],
}  # fmt: skip
VOCAB = 100


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert")
    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    BertModel(config).save_pretrained(folder)
    return str(folder)


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
    unprojected = ["model.embed_dim=32"] if preset.startswith("siglip") else []  # its pooled width is the shared space
    cfg = compose_config(f"model={preset}", *(SMALL_CNN if preset.startswith("convnext") else SMALL_IMAGE), *unprojected)
    tower = instantiate(cfg.model.image_tower)
    size = cfg.model.image_size
    check_tower(tower, (torch.randn(2, 3, size, size),), cfg.model.embed_dim)


def test_dual_encoder_names_a_missing_member():
    encoder = small_encoder()
    with pytest.raises(TypeError, match=r"model.text_tower \(Identity\) is not a tower: it lacks embed_dim, token_width"):
        DualEncoder(encoder.image_tower, torch.nn.Identity(), embed_dim=16, image_size=32, context_length=12)
