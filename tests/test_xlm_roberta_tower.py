"""The multilingual preset's text tower (xlm_roberta_b32) starting from saved XLM-R weights: OpenCLIP's layout (no
pooler layer, mean pooling, a two-layer MLP projection) around transformers' own model, at a tiny size."""

import torch
from hydra.utils import instantiate
from transformers import XLMRobertaConfig, XLMRobertaModel

TINY = {"vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 40}  # fmt: skip


def test_xlm_roberta_tower_reads_saved_weights_and_mean_pools_them(tmp_path, compose_config):
    torch.manual_seed(0)
    published = XLMRobertaConfig(**TINY, type_vocab_size=1, layer_norm_eps=1e-5)  # xlm-roberta-base's eps, not 1e-12
    reference = XLMRobertaModel(published).eval()  # with its pooler layer, as published
    reference.save_pretrained(tmp_path / "xlmr")
    sizes = [f"model.text_tower.transformers_config.{key}={value}" for key, value in TINY.items()]
    cfg = compose_config(
        "model=xlm_roberta_b32", "model.embed_dim=8", "model.context_length=16", "model.text_tower.pretrained=true",
        f"model.text_tower.name_or_path={tmp_path}/xlmr", *sizes,
    )  # fmt: skip
    tower = instantiate(cfg.model.text_tower, vocab_size=100).eval()
    assert not any("pooler" in name for name, _ in tower.named_parameters())  # built without it, as OpenCLIP does
    assert [module.out_features for module in tower.projection if isinstance(module, torch.nn.Linear)] == [20, 8]
    ids = torch.tensor([[0, 5, 6, 7, 2, 1, 1, 1], [0, 9, 2, 1, 1, 1, 1, 1]])
    mask = (ids != 1).long()
    with torch.no_grad():
        states = reference(input_ids=ids, attention_mask=mask).last_hidden_state
        expected = tower.projection((states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True))
        torch.testing.assert_close(tower(ids, mask), expected, rtol=0, atol=1e-6)
