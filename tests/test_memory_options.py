"""Memory and speed options: gradient checkpointing, patch dropout, LiT locking, torch.compile."""

from contextlib import nullcontext

import pytest
import torch
from helpers import gradients, make_batch, small_encoder, trainable

from clip_train.model import CausalTextTower, ImageTower
from clip_train.objectives import InfoNCE, infonce_loss
from clip_train.training.accumulation import contrastive_backward
from clip_train.training.optim import parameter_groups


def test_gradient_checkpointing_leaves_gradients_unchanged():
    torch.manual_seed(0)
    plain = small_encoder().double().train()
    checkpointed = small_encoder().double().train()
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.image_tower.trunk.set_grad_checkpointing(True)
    checkpointed.text_tower = CausalTextTower(
        16, vocab_size=50, width=32, layers=2, heads=2, context_length=12, grad_checkpointing=True
    ).double()
    checkpointed.text_tower.load_state_dict(plain.text_tower.state_dict())
    batch = make_batch()
    expected, got = gradients(plain, batch, 1), gradients(checkpointed, batch, 1)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], msg=name)


def test_checkpointing_options_reach_the_trunks():
    image = ImageTower("test_vit", embed_dim=8, image_size=32, grad_checkpointing=True)
    text = CausalTextTower(8, vocab_size=20, width=16, layers=1, heads=2, context_length=8, grad_checkpointing=True)
    assert image.trunk.grad_checkpointing
    flags = [m.gradient_checkpointing for m in text.transformer.modules() if hasattr(m, "gradient_checkpointing")]
    assert flags and all(flags)


def test_patch_dropout_drops_patches_in_training_only_and_keeps_the_class_token():
    torch.manual_seed(0)
    tower = ImageTower("test_vit", embed_dim=8, image_size=32, patch_size=8, patch_dropout=0.5)
    reference = ImageTower("test_vit", embed_dim=8, image_size=32, patch_size=8)
    reference.load_state_dict(tower.state_dict())
    token_counts = []
    tower.trunk.blocks[0].register_forward_pre_hook(lambda module, args: token_counts.append(args[0].shape[1]))
    images = torch.randn(2, 3, 32, 32)
    tower.train()(images)
    assert token_counts[-1] == 1 + 16 // 2  # class token + half of the 4×4 patches
    tower.eval(), reference.eval()
    torch.testing.assert_close(tower(images), reference(images))
    assert token_counts[-1] == 1 + 16


def test_locked_image_tower_trains_only_its_last_group_and_projection():
    tower = ImageTower("test_vit", embed_dim=8, image_size=32, lock=True, unlocked_groups=1)
    last_block = {n for n in trainable(tower) if n.startswith("trunk.blocks.")}
    assert last_block and all(n.startswith("trunk.blocks.5.") for n in last_block)
    assert trainable(tower) == last_block | {"trunk.norm.weight", "trunk.norm.bias", "projection.weight"}
    fully = ImageTower("test_vit", embed_dim=8, image_size=32, lock=True, unlocked_groups=0, freeze_norm=False)
    norms = {n for n in trainable(fully) if n != "projection.weight"}
    assert norms and all(".norm" in n for n in norms)  # only norm gains and biases learn in the locked trunk


def test_locked_text_tower_trains_only_its_last_layer_final_norm_and_projection():
    tower = CausalTextTower(8, vocab_size=20, width=16, layers=3, heads=2, context_length=8, lock=True, unlocked_layers=1)
    names = trainable(tower)
    assert {n for n in names if "layers." in n} and all("layers.2." in n for n in names if "layers." in n)
    assert not any("embeddings" in n or "layers.0." in n for n in names)
    assert {"transformer.final_layer_norm.weight", "projection.weight"} <= names


def test_frozen_weights_do_not_move_during_training():
    torch.manual_seed(0)
    model = small_encoder().double()
    model.text_tower = CausalTextTower(16, vocab_size=50, width=32, layers=2, heads=2, context_length=12, lock=True)
    model.double()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    frozen = {n: value for n, value in before.items() if not dict(model.named_parameters())[n].requires_grad}
    optimizer = torch.optim.AdamW(parameter_groups(model), lr=1e-2, weight_decay=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        contrastive_backward(model, InfoNCE(), make_batch(), 2, lambda loss: loss.backward(), nullcontext)
        optimizer.step()
    after = dict(model.named_parameters())
    assert frozen and all(torch.equal(after[n], value) for n, value in frozen.items())
    assert not torch.equal(after["text_tower.projection.weight"], before["text_tower.projection.weight"])


@pytest.mark.slow
def test_compiled_towers_match_eager_and_train():
    """Graph capture and AOT autograd of both towers, as `compile=true` does; the aot_eager backend
    skips inductor's code generation, which takes minutes on 2 CPU cores."""
    torch.manual_seed(0)
    eager = small_encoder()
    compiled = small_encoder()
    compiled.load_state_dict(eager.state_dict())
    compiled.image_tower.compile(backend="aot_eager")
    compiled.text_tower.compile(backend="aot_eager")
    batch = {key: value.float() if key == "image" else value for key, value in make_batch().items()}
    for model in (eager, compiled):
        model.zero_grad()
        image, text = model(batch)
        infonce_loss(image, text, model.logit_scale).backward()
    torch.testing.assert_close(compiled(batch)[0], eager(batch)[0], rtol=1e-4, atol=1e-5)
    grad = compiled.image_tower.projection.weight.grad
    torch.testing.assert_close(grad, eager.image_tower.projection.weight.grad, rtol=1e-3, atol=1e-5)
    assert set(compiled.state_dict()) == set(eager.state_dict())  # checkpoints keep their keys
