"""Checkpoints of `compile=true` runs: a compiled run resumes from an eager run's checkpoint and the reverse,
their checkpoints hold the eager parameter names, and `clip_train.load` and `clip_train.export` read them.

Five short runs of the `test` preset on the same colour-square shards and seed; eager and compiled steps
differ by float32 rounding only (inductor fuses and reorders), so runs are compared to tolerances."""

import os

import pytest
import torch
from helpers import colour_samples
from hydra import compose, initialize_config_dir

from clip_train.data.shard_writer import write_shards
from clip_train.export import export
from clip_train.inference import load
from clip_train.model.compiling import compile_model
from clip_train.paths import CONFIG_DIR
from clip_train.train import run

# measured: compiled and eager runs differed by at most a quarter of this; steps 3 and 4 moved weights 690 times past it
WEIGHT_TOLERANCE = dict(rtol=1e-5, atol=1e-7)


def train(folder, name: str, steps: int, compile: bool, resume: str | None = None) -> str:
    """`steps` steps of the test preset on the shards in `folder`; returns the run's last.ckpt."""
    overrides = [
        f"paths.output_dir={folder}/{name}", "data=webdataset",
        f"data.train_shards='{folder}/shards/train-{{00000..00003}}.tar'", "data.batch_size=8", "data.num_workers=0",
        "model=test", "eval=none", f"trainer.max_steps={steps}",
        "trainer.num_sanity_val_steps=0", "logger=csv", f"compile={compile}", f"ckpt_path={resume or 'null'}",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        run(compose("train", overrides=overrides))
    return os.path.join(folder, name, "checkpoints", "last.ckpt")


def model_state(path: str) -> tuple[dict[str, torch.Tensor], int]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    return checkpoint["state_dict"], checkpoint["global_step"]


def assert_close_states(state: dict, reference: dict) -> None:
    assert list(state) == list(reference)  # the eager names, in order: no `_orig_mod.`
    for name, value in reference.items():
        torch.testing.assert_close(state[name], value, **WEIGHT_TOLERANCE, msg=name)


@pytest.mark.slow
def test_compiled_and_eager_runs_resume_from_each_other_and_a_compiled_run_exports(tmp_path):
    write_shards(str(tmp_path / "shards"), "train", colour_samples(40), samples_per_shard=10)
    eager_2 = train(tmp_path, "eager_2", 2, compile=False)
    eager_4 = train(tmp_path, "eager_4", 4, compile=False, resume=eager_2)  # the reference
    compiled_from_eager = train(tmp_path, "compiled_from_eager", 4, compile=True, resume=eager_2)
    compiled_2 = train(tmp_path, "compiled_2", 2, compile=True)
    eager_from_compiled = train(tmp_path, "eager_from_compiled", 4, compile=False, resume=compiled_2)

    reference, _ = model_state(eager_4)
    assert_close_states(model_state(compiled_2)[0], model_state(eager_2)[0])
    for path in (compiled_from_eager, eager_from_compiled):
        state, step = model_state(path)
        assert step == 4  # resumed at step 2, not restarted
        assert_close_states(state, reference)
    with pytest.raises(AssertionError):  # the tolerance tells a step apart
        assert_close_states(model_state(eager_2)[0], reference)

    compiled = load(compiled_from_eager)  # the run's weights, compiled as the run ran them
    export(load(compiled_from_eager), str(tmp_path / "exported"))
    exported = load(str(tmp_path / "exported"))
    compile_model(compiled.network)
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    captions = ["a red square", "a blue square on green", "yellow", "two green squares"]
    with torch.no_grad():
        exported_images, compiled_images = exported.encode_pixels(images), compiled.encode_pixels(images)
    torch.testing.assert_close(exported_images, compiled_images, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(exported.encode_text(captions), compiled.encode_text(captions), rtol=1e-4, atol=1e-5)
