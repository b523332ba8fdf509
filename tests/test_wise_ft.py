"""WiSE-FT: alpha 0 is the source and alpha 1 the fine-tuned model exactly, between them the weights are the naive
(1 - alpha) * source + alpha * fine-tuned; the export option writes it and evaluate sweeps alpha into one table."""

import csv
import os

import pytest
import torch
from helpers import clip_model
from hydra import compose, initialize_config_dir

import clip_train
from clip_train.evaluate import run as evaluate
from clip_train.export import export
from clip_train.export import main as export_main
from clip_train.paths import CONFIG_DIR
from clip_train.wise_ft import interpolate

TEXTS = ["a red square", "a green square"]


def _pair(tmp_path) -> tuple[str, str]:
    """A source model and a 'fine-tuned' one (every floating weight moved), exported as folders."""
    vit = {"model_name": "vit_base_patch16_clip_224", "width": 48, "depth": 2, "num_heads": 3, "patch_size": 8}
    torch.manual_seed(0)
    source = clip_model(vit, "gelu", image_size=32)
    torch.manual_seed(0)
    tuned = clip_model(vit, "gelu", image_size=32)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in tuned.network.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    export(source, str(tmp_path / "source"))
    export(tuned, str(tmp_path / "tuned"))
    return str(tmp_path / "source"), str(tmp_path / "tuned")


def test_both_ends_are_exact_and_the_middle_is_the_naive_mix(tmp_path):
    source, tuned = (clip_train.load(path) for path in _pair(tmp_path))
    for alpha, expected in ((0.0, source), (1.0, tuned)):
        mixed = interpolate(source, tuned, alpha)
        for name, value in expected.state_dict().items():
            assert torch.equal(mixed.state_dict()[name], value), (alpha, name)
        assert torch.equal(mixed.encode_text(TEXTS), expected.encode_text(TEXTS))
    mixed = interpolate(source, tuned, 0.3).state_dict()
    for name, value in tuned.state_dict().items():
        naive = 0.7 * source.state_dict()[name].double() + 0.3 * value.double()
        torch.testing.assert_close(mixed[name].double(), naive, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="between 0"):
        interpolate(source, tuned, 1.5)


@pytest.mark.slow  # an export and four evaluations (~70 s on a loaded 2-core machine)
def test_export_writes_the_interpolation_and_evaluate_sweeps_it_into_one_table(tmp_path):
    source_path, tuned_path = _pair(tmp_path)
    export_main([f"checkpoint={tuned_path}", f"out={tmp_path}/mix", f"wise_ft.source={source_path}", "wise_ft.alpha=0.5"])
    source, tuned = clip_train.load(source_path), clip_train.load(tuned_path)
    torch.testing.assert_close(
        clip_train.load(str(tmp_path / "mix")).encode_text(TEXTS), interpolate(source, tuned, 0.5).encode_text(TEXTS)
    )

    def run(out: str, *overrides: str) -> dict:
        os.makedirs(tmp_path / out)
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("evaluate", overrides=[*overrides, "eval.images_per_class=2", "eval.num_workers=0",
                                                 "eval.progress=false", f"paths.output_dir={tmp_path}/{out}"])  # fmt: skip
        return evaluate(cfg)

    sweep = run("sweep", f"checkpoint={tuned_path}", f"wise_ft.source={source_path}", "wise_ft.alphas=[0,0.5,1]")
    assert list(sweep) == ["alpha=0", "alpha=0.5", "alpha=1"]
    for alpha, path in (("alpha=0", source_path), ("alpha=1", tuned_path)):
        alone = run(alpha.replace("=", "_"), f"checkpoint={path}")
        for name, value in alone.items():
            if isinstance(value, float):
                assert sweep[alpha][name] == pytest.approx(value, abs=1e-6), (alpha, name)
    with open(tmp_path / "sweep" / "results.csv") as f:
        assert next(csv.reader(f)) == ["metric", "alpha=0", "alpha=0.5", "alpha=1"]
