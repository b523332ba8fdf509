"""`logit_scale` and `logit_bias` are (1,) parameters (FSDP refuses 0-d ones): the same losses and gradients
as the 0-d temperature they replace, and checkpoints written with 0-d ones still load and resume."""

import copy

import pytest
import torch
from helpers import colour_samples, float64_encoder, make_batch
from hydra import compose, initialize_config_dir

import clip_train
from clip_train.data.shard_writer import write_shards
from clip_train.objectives import InfoNCE, SigLip
from clip_train.paths import CONFIG_DIR
from clip_train.train import run


def _loss_and_gradients(model, objective, scalar_shape: tuple) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The objective's loss on `make_batch()` and every gradient, with the temperature parameters given `scalar_shape`."""
    model = copy.deepcopy(model)
    for name in ("logit_scale", "logit_bias"):
        value = getattr(model, name)
        if value is not None:
            model.register_parameter(name, torch.nn.Parameter(value.detach().reshape(scalar_shape).clone()))
    loss = objective(model.training_forward(make_batch()))["loss"]
    loss.backward()
    return loss.detach(), {name: p.grad.reshape(-1) if p.numel() == 1 else p.grad for name, p in model.named_parameters()}


@pytest.mark.parametrize("objective", ["infonce", "siglip"])
def test_one_element_temperature_gives_the_0d_loss_and_gradients_exactly(objective):
    model = float64_encoder(objective)
    assert model.logit_scale.shape == (1,)
    make = {"infonce": InfoNCE, "siglip": SigLip}[objective]
    one_element, one_element_grads = _loss_and_gradients(model, make(), (1,))
    scalar, scalar_grads = _loss_and_gradients(model, make(), ())
    assert one_element.shape == scalar.shape == ()
    torch.testing.assert_close(one_element, scalar, rtol=0, atol=0)
    assert one_element_grads.keys() == scalar_grads.keys() and "logit_scale" in scalar_grads
    for name, gradient in scalar_grads.items():
        torch.testing.assert_close(one_element_grads[name], gradient, rtol=0, atol=0, msg=name)


def _train(folder, *overrides: str) -> None:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        run(compose("train", overrides=[
            f"paths.output_dir={folder}/run", "data=webdataset",
            f"data.train_shards='{folder}/shards/train-{{00000..00003}}.tar'", "data.batch_size=8", "data.num_workers=0",
            "model=test", "logger=[]", "trainer.limit_val_batches=0", *overrides,
        ]))  # fmt: skip


def _as_0d_layout(checkpoint: dict) -> dict:
    """A checkpoint as the code before issue 23 wrote it: 0-d `logit_scale` and bias, and their 0-d AdamW moments."""
    old = copy.deepcopy(checkpoint)
    for key in ("model.logit_scale", "model.logit_bias"):
        if key in old["state_dict"]:
            old["state_dict"][key] = old["state_dict"][key].reshape(())
    for optimizer in old["optimizer_states"]:
        for state in optimizer["state"].values():
            for name, value in state.items():
                if name != "step" and value.numel() == 1:
                    state[name] = value.reshape(())
    return old


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["infonce", "siglip"])
def test_a_checkpoint_with_0d_temperature_loads_and_resumes(tmp_path, loss):
    write_shards(str(tmp_path / "shards"), "train", colour_samples(40), samples_per_shard=10)
    _train(tmp_path, f"loss={loss}", "trainer.max_steps=2")
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, weights_only=False)
    assert checkpoint["state_dict"]["model.logit_scale"].shape == (1,)
    old_path = tmp_path / "old.ckpt"
    torch.save(_as_0d_layout(checkpoint), old_path)
    assert sum(1 for o in torch.load(old_path, weights_only=False)["optimizer_states"] for s in o["state"].values()
               for v in s.values() if v.dim() == 0 and v.numel() == 1) > 0  # fmt: skip

    new, old = clip_train.load(str(path)), clip_train.load(str(old_path))
    assert old.logit_scale.shape == (1,)
    texts = ["a red square", "a blue square"]
    torch.testing.assert_close(old.encode_text(texts), new.encode_text(texts), rtol=0, atol=0)
    torch.testing.assert_close(old.logit_scale, new.logit_scale, rtol=0, atol=0)

    _train(tmp_path, f"loss={loss}", "trainer.max_steps=3", f"ckpt_path={old_path}")
    resumed = torch.load(path, weights_only=False)
    assert resumed["global_step"] == 3 and resumed["state_dict"]["model.logit_scale"].shape == (1,)
    moments = [v for o in resumed["optimizer_states"] for s in o["state"].values() for k, v in s.items() if k != "step"]
    assert all(v.dim() == 1 for v in moments if v.numel() == 1)  # the moments took the parameters' (1,) shape
