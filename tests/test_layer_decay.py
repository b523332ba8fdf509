"""Layer-wise learning-rate decay (optim.layer_decay): every parameter's rate, and the step an optimizer takes
with it, against a table written by hand for the test preset's towers (timm test_vit: 6 blocks; a 2-layer
causal text transformer)."""

import pytest
import torch
from helpers import make_batch, small_encoder

from clip_train.training.optim import no_decay_names, parameter_groups, scale_learning_rates

LR, DECAY = 1e-3, 0.5


def hand_layer(name: str) -> tuple[int, int]:
    """(layer id, the tower's top) as the docs define them, by hand for small_encoder()'s names."""
    if name.startswith("image_tower."):
        if name.startswith(("image_tower.trunk.cls_token", "image_tower.trunk.pos_embed", "image_tower.trunk.patch_embed")):
            return 0, 7
        if name.startswith("image_tower.trunk.blocks."):
            return int(name.split(".")[3]) + 1, 7  # blocks 0..5 at 1..6
        if name.startswith("image_tower.trunk.norm"):
            return 6, 7  # timm groups a ViT's final norm with its last block
        assert name == "image_tower.projection.weight"
        return 7, 7
    if name.startswith("text_tower."):
        if ".embeddings." in name:
            return 0, 3
        if ".layers." in name:
            return int(name.split(".")[4]) + 1, 3
        assert name.startswith(("text_tower.transformer.final_layer_norm", "text_tower.projection")), name
        return 3, 3
    return 0, 0  # logit_scale: the full rate


def test_each_parameter_learns_at_lr_times_decay_to_its_depth_below_the_top():
    model = small_encoder()
    optimizer = scale_learning_rates(torch.optim.AdamW(parameter_groups(model, layer_decay=DECAY), lr=LR, weight_decay=0.1))
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    decay = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    skip = no_decay_names(model)
    for name, parameter in model.named_parameters():
        layer, top = hand_layer(name)
        assert rate[id(parameter)] == pytest.approx(LR * DECAY ** (top - layer), rel=1e-12), name
        assert decay[id(parameter)] == (0.0 if name in skip else 0.1), name
    assert len(rate) == len(list(model.parameters()))
    assert optimizer.param_groups[0]["lr"] == LR  # the rate the training step logs as `lr` is the full one


def test_an_sgd_step_moves_each_parameter_by_its_own_rate_times_its_gradient():
    torch.manual_seed(0)
    model = small_encoder().double()
    batch = make_batch(4)
    image, text = model(batch)
    (image @ text.T).logsumexp(-1).sum().backward()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = scale_learning_rates(torch.optim.SGD(parameter_groups(model, layer_decay=DECAY), lr=LR))
    optimizer.step()
    for name, parameter in model.named_parameters():
        layer, top = hand_layer(name)
        grad = parameter.grad if parameter.grad is not None else torch.zeros_like(parameter)
        expected = before[name] - LR * DECAY ** (top - layer) * grad
        torch.testing.assert_close(parameter.detach(), expected, rtol=0, atol=1e-15, msg=name)


def test_off_by_default_and_decay_one_changes_no_rate():
    model = small_encoder()
    default = parameter_groups(model)
    assert len(default) == 2 and all("lr_scale" not in group for group in default)
    flat = scale_learning_rates(torch.optim.AdamW(parameter_groups(model, layer_decay=1.0), lr=LR))
    assert {group["lr"] for group in flat.param_groups} == {LR}


def test_a_decay_outside_zero_to_one_names_the_key():
    with pytest.raises(ValueError, match="optim.layer_decay=1.5"):
        parameter_groups(small_encoder(), layer_decay=1.5)
