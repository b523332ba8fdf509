"""Every memory option docs/scaling-out.md names works as written (`key=value`, no `+`) on every model preset:
composed from the real configs and built on the meta device (no memory, no weights)."""

import re

import pytest
import torch
from helpers import options
from hydra.utils import instantiate
from omegaconf import OmegaConf
from readme_code import readme_section

# clip_pretrained takes its architecture from a published model's files (model.init_from), absent here
PRESETS = [preset for preset in options("model") if preset != "clip_pretrained"]


def readme_memory_options() -> list[str]:
    """The override sets of the memory table of docs/scaling-out.md whose keys are model keys, e.g.
    'model.image_tower.lock=true model.image_tower.unlocked_groups=N' with N made 1."""
    rows = re.findall(r"^\| `(model\.[^|]*?)` \|", readme_section("# Scaling out"), flags=re.M)
    sets = [row.replace("`, `", "` `").replace("`", "").replace("=N", "=1") for row in rows]
    return [overrides for row in sets for overrides in ([row] if "lock" in row else row.split())]


def test_the_readme_table_names_every_option():
    assert set(readme_memory_options()) == {
        "model.image_tower.grad_checkpointing=true",
        "model.text_tower.grad_checkpointing=true",
        "model.image_tower.patch_dropout=0.5",
        "model.image_tower.lock=true model.image_tower.unlocked_groups=1",
        "model.text_tower.lock=true model.text_tower.unlocked_layers=1",
    }


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("option", readme_memory_options())
def test_memory_option_composes_and_builds_on_every_preset(preset, option, compose_config):
    cfg = compose_config(f"model={preset}", *option.split())
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True, throw_on_missing=False)
    model_cfg["text_tower"]["vocab_size"] = 100
    if "eos_token_id" in model_cfg["text_tower"]:
        model_cfg["text_tower"]["eos_token_id"] = 1
    if "patch_dropout" in option and preset.startswith("convnext"):  # a CNN has no patch tokens: refused, by name
        with pytest.raises(Exception, match="patch_dropout=0.5: convnext_base has no patch tokens"):
            instantiate(model_cfg)
        return
    with torch.device("meta"):
        model = instantiate(model_cfg)
    tower = model.image_tower if "image_tower" in option else model.text_tower
    if "lock" in option:
        frozen = [name for name, p in tower.named_parameters() if not p.requires_grad]
        assert frozen and any(p.requires_grad for p in tower.parameters())  # locked, but not all of it
    elif "grad_checkpointing" in option and "image_tower" in option:  # a ViT's flag, or each ConvNeXt stage's
        assert any(getattr(m, "grad_checkpointing", False) for m in tower.trunk.modules())
    elif "grad_checkpointing" in option:
        assert any(getattr(m, "gradient_checkpointing", False) for m in tower.modules())
    else:
        assert [m.prob for m in tower.modules() if type(m).__name__ == "PatchDropout"] == [0.5]
