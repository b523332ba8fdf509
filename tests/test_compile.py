"""`compile=true` (`clip_train.model.compiling.compile_model`): the compiled model against the eager one on the
same weights and batch, on the `test` and `coca_test` presets.

A `CompileCounter` backend records what dynamo captured and runs the captured graphs as they are (no code
generation: quick); the inductor test is what `compile=true` runs, and is slow on 2 CPU cores."""

import copy

import pytest
import torch
from hydra.utils import instantiate
from torch._dynamo.testing import CompileCounter

from clip_train.model.compiling import compile_model
from clip_train.training.flops import training_flops_per_sample

VOCAB = 100


def preset_model_and_loss(compose_config, preset: str):
    """The preset's model (vocabulary `VOCAB`) and its objective (`loss=coca` for a CoCa preset), seed 0."""
    loss = "coca" if preset.startswith("coca") else "infonce"
    cfg = compose_config(f"model={preset}", f"loss={loss}", f"model.text_tower.vocab_size={VOCAB}")
    torch.manual_seed(0)
    return instantiate(cfg.model), instantiate(cfg.loss)


def preset_batch(model, size: int = 8) -> dict[str, torch.Tensor]:
    """(size, 3, S, S) float images and (size, L) token ids in 1..VOCAB-1, with captions of 4.. tokens."""
    generator = torch.Generator().manual_seed(1)
    length = model.context_length
    mask = (torch.arange(length) < (4 + torch.arange(size) % (length - 4)).unsqueeze(1)).long()
    return {
        "image": torch.randn(size, 3, model.image_size, model.image_size, generator=generator),
        "input_ids": torch.randint(1, VOCAB, (size, length), generator=generator) * mask,
        "attention_mask": mask,
    }


def loss_and_gradients(model, objective, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    loss = objective(model.training_forward(batch))["loss"]
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("preset", ["test", "coca_test"])
def test_compile_captures_the_training_step_of_each_model_and_keeps_its_numbers(compose_config, preset):
    """The bug this guards: compiling the towers' `__call__` alone (the code before `compile_model`) left
    CoCa's training step wholly eager (0 frames captured), since it calls its towers through methods."""
    eager, objective = preset_model_and_loss(compose_config, preset)
    compiled = copy.deepcopy(eager)
    counter = CompileCounter()
    compile_model(compiled, backend=counter)
    batch = preset_batch(eager)
    eager_loss, eager_grads = loss_and_gradients(eager, objective, batch)
    compiled_loss, compiled_grads = loss_and_gradients(compiled, objective, batch)
    assert counter.frame_count >= 1 and counter.op_count > 50  # the towers' layers, not a stray frame
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-6)
    assert compiled_grads.keys() == eager_grads.keys()
    for name, grad in eager_grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert list(compiled.state_dict()) == list(eager.state_dict())  # no `_orig_mod.`: checkpoints keep their keys
    with torch.no_grad():  # validation and evaluation run the towers' own compiled __call__
        frames = counter.frame_count
        torch.testing.assert_close(compiled(batch)[0], eager(batch)[0], rtol=1e-5, atol=1e-6)
        assert counter.frame_count > frames


def test_flop_count_of_a_compiled_model_is_the_eager_models(compose_config):
    """The throughput callback counts FLOPs on a meta-device deep copy; a compiled `training_forward` stored as
    a plain function would still run this (CPU) model and fail on the copy's meta tensors."""
    model, _ = preset_model_and_loss(compose_config, "coca_test")
    eager_flops = training_flops_per_sample(model)
    compile_model(model, backend=CompileCounter())
    assert eager_flops > 0 and training_flops_per_sample(model) == eager_flops


@pytest.mark.slow
def test_inductor_compiled_towers_give_the_eager_loss_and_gradients(compose_config):
    """What `compile=true` runs: inductor's generated CPU kernels, which reorder and fuse float32 arithmetic,
    so the tolerances are float32 rounding's, not exact equality."""
    eager, objective = preset_model_and_loss(compose_config, "test")
    compiled = copy.deepcopy(eager)
    compile_model(compiled)
    batch = preset_batch(eager)
    eager_loss, eager_grads = loss_and_gradients(eager, objective, batch)
    compiled_loss, compiled_grads = loss_and_gradients(compiled, objective, batch)
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-5)
    assert compiled_grads.keys() == eager_grads.keys() and len(eager_grads) > 20
    for name, grad in eager_grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-3, atol=1e-5, msg=name)
