"""LoRA on either tower (`clip_train.model.lora`): which layers get adapters in each tower family, what trains, the
merged export against the adapted model and a hand-computed merge, and a checkpoint without its source."""

import json
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from helpers import make_batch, options
from hf_clip_models import save_small_clip
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from peft.tuners.lora import LoraLayer
from transformers import BertConfig, BertModel

import clip_train
from clip_train.checkpoint_file import read_checkpoint
from clip_train.evaluate import run as evaluate
from clip_train.export import export
from clip_train.export import main as export_main
from clip_train.inference import ClipModel
from clip_train.interop import init_from
from clip_train.model import CausalTextTower, DualEncoder, ImageTower, PretrainedTextTower
from clip_train.model.lora import config_without_adapters
from clip_train.objectives import InfoNCE
from clip_train.paths import CONFIG_DIR
from clip_train.recipe import Recipe
from clip_train.train import run
from clip_train.training.optim import parameter_groups

LORA = {"rank": 4, "alpha": 8.0}
TEXTS = ["a red square", "a blue square", "red"]


def adapted(module: torch.nn.Module) -> set[str]:
    """Names of the modules peft replaced by a LoRA layer."""
    return {name for name, m in module.named_modules() if isinstance(m, LoraLayer)}


def lora_encoder() -> DualEncoder:
    """`helpers.small_encoder`'s shape with rank-4 adapters on both towers, seeded, float64."""
    torch.manual_seed(0)
    return DualEncoder(
        ImageTower("test_vit", embed_dim=16, image_size=32, lora=LORA),
        CausalTextTower(16, vocab_size=50, width=32, layers=2, heads=2, context_length=12, lora=LORA),
        embed_dim=16, image_size=32, context_length=12,
    ).double()  # fmt: skip


def test_default_targets_are_each_familys_attention_and_mlp_linears(tmp_path):
    image = ImageTower("test_vit", embed_dim=16, image_size=32, lora=LORA)
    blocks = len(image.trunk.blocks)
    assert adapted(image.trunk) == {f"blocks.{i}.{layer}" for i in range(blocks)
                                    for layer in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")}  # fmt: skip
    causal = CausalTextTower(16, vocab_size=50, width=32, layers=2, heads=2, context_length=12, lora=LORA)
    assert adapted(causal.transformer) == {f"encoder.layers.{i}.{layer}" for i in range(2) for layer in
                                           ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                            "self_attn.out_proj", "mlp.fc1", "mlp.fc2")}  # fmt: skip
    BertModel(BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(tmp_path / "bert")  # fmt: skip
    bert = PretrainedTextTower(str(tmp_path / "bert"), embed_dim=16, vocab_size=60, lora=LORA)
    assert adapted(bert.transformer) == {f"encoder.layer.{i}.{layer}" for i in range(2) for layer in
                                         ("attention.self.query", "attention.self.key", "attention.self.value",
                                          "attention.output.dense", "intermediate.dense", "output.dense")}  # fmt: skip
    named = ImageTower("test_vit", embed_dim=16, image_size=32, lora=LORA | {"target_modules": ["qkv"]})
    assert adapted(named.trunk) == {f"blocks.{i}.attn.qkv" for i in range(blocks)}


def test_only_adapters_projections_and_temperature_train_and_the_base_stays():
    model = lora_encoder()
    expected = {name for name, _ in model.named_parameters() if ".lora_" in name or name.endswith("projection.weight")}
    assert {name for name, p in model.named_parameters() if p.requires_grad} == expected | {"logit_scale"}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(parameter_groups(model), lr=1e-2)
    for seed in range(3):  # lora_B starts at zero, so lora_A gets a gradient from the second step on
        optimizer.zero_grad(set_to_none=True)
        InfoNCE()(model.training_forward(make_batch(8, seed)))["loss"].backward()
        with_grad = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        optimizer.step()
    assert with_grad == expected | {"logit_scale"}
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == expected | {"logit_scale"}


def test_lora_settings_are_checked_by_name():
    with pytest.raises(ValueError, match=r"model.image_tower.lora.rnak is not a LoRA setting"):
        ImageTower("test_vit", embed_dim=16, image_size=32, lora={"rnak": 4})
    with pytest.raises(ValueError, match=r"model.text_tower.lock=true and model.text_tower.lora.rank > 0"):
        CausalTextTower(16, vocab_size=50, width=32, layers=2, heads=2, context_length=12, lock=True, lora=LORA)
    with pytest.raises(ValueError, match=r"model.image_tower.lora.target_modules=\['nothing'\]"):
        ImageTower("test_vit", embed_dim=16, image_size=32, lora=LORA | {"target_modules": ["nothing"]})


@pytest.mark.slow
@pytest.mark.parametrize("preset", [name for name in options("model") if name != "clip_pretrained"])
def test_lora_option_builds_on_every_preset(preset, compose_config):
    """`model.image_tower.lora.rank=4 model.text_tower.lora.rank=4` as written (no `+`), on the meta device."""
    cfg = compose_config(f"model={preset}", "model.image_tower.lora.rank=4", "model.text_tower.lora.rank=4")
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True, throw_on_missing=False)
    model_cfg["text_tower"] |= {"vocab_size": 100} | ({"eos_token_id": 1} if "eos_token_id" in model_cfg["text_tower"] else {})
    with torch.device("meta"):
        model = instantiate(model_cfg)
    for tower in (model.image_tower, model.text_tower):
        assert adapted(tower) and all(".lora_" in name or name.startswith("projection") or (".decoder" in name)
                                      for name, p in tower.named_parameters() if p.requires_grad)  # fmt: skip


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """3 steps of LoRA (both towers) on a small transformers CLIP through model.init_from, whose folder is then
    deleted; returns (run folder, the source's weights)."""
    folder = tmp_path_factory.mktemp("lora")
    save_small_clip(str(folder / "clip"))
    source = init_from(str(folder / "clip")).state_dict
    overrides = [
        f"paths.output_dir={folder}/run", "model=clip_pretrained", f"model.init_from={folder}/clip",
        "model.image_tower.lora.rank=4", "model.text_tower.lora.rank=4", "model.text_tower.lora.alpha=4",
        "data.batch_size=8", "data.num_workers=0", "data.synthetic.num_train=64", "data.synthetic.num_val=16",
        "data.synthetic.samples_per_shard=32", "trainer.max_steps=3", "logger=[]", "trainer.limit_val_batches=0",
        "eval=none", "optim.optimizer.lr=1e-2",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        run(compose("train", overrides=overrides))
    shutil.rmtree(folder / "clip")  # the checkpoint rebuilds without its source
    return folder / "run", source


@pytest.mark.slow
def test_a_lora_checkpoint_loads_without_its_source_with_the_source_as_its_base(lora_run):
    run_dir, source = lora_run
    tuned = clip_train.load(str(run_dir / "checkpoints" / "last.ckpt"))
    weights = tuned.state_dict()
    adapters = {key for key in weights if ".lora_" in key}
    assert adapters and all(weights[key].abs().sum() > 0 for key in adapters)
    for key, value in source.items():  # every source weight is the base, untouched, but projections and temperature
        ours = weights.get(key, weights.get(key.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")))
        if "projection" in key or key == "logit_scale":
            assert not torch.equal(ours.reshape(value.shape), value), f"{key} did not train"
        else:
            torch.testing.assert_close(ours, value, rtol=0, atol=0, msg=key)


@pytest.mark.slow
def test_the_merged_export_has_plain_weights_and_encodes_as_the_adapted_model(lora_run, tmp_path):
    run_dir, _ = lora_run
    checkpoint = str(run_dir / "checkpoints" / "last.ckpt")
    tuned = clip_train.load(checkpoint)
    weights = tuned.state_dict()
    images = torch.rand(4, 3, 32, 32)
    export_main([f"checkpoint={checkpoint}", f"out={tmp_path}/export"])
    exported = clip_train.load(str(tmp_path / "export"))
    plain = exported.state_dict()
    assert not [key for key in plain if "lora_" in key or "base_layer" in key]
    assert "lora" not in json.dumps(Recipe.read(str(tmp_path / "export")).model)
    layers = {"image_tower.trunk.blocks.1.attn.qkv": 16 / 4, "text_tower.transformer.encoder.layers.0.mlp.fc2": 4 / 4}
    for layer, scale in layers.items():  # alpha / rank: the image tower's alpha is the preset's 16
        a, b = weights[f"{layer}.lora_A.default.weight"], weights[f"{layer}.lora_B.default.weight"]
        merged_by_hand = weights[f"{layer}.base_layer.weight"] + scale * b @ a  # W + (alpha / rank) B A
        torch.testing.assert_close(plain[f"{layer}.weight"], merged_by_hand, rtol=0, atol=1e-6)
        assert not torch.allclose(merged_by_hand, weights[f"{layer}.base_layer.weight"], atol=1e-4)
    with torch.no_grad():
        pixels = (images - 0.5) / 0.25
        torch.testing.assert_close(exported.encode_pixels(pixels), tuned.encode_pixels(pixels), rtol=0, atol=1e-5)
    torch.testing.assert_close(exported.encode_text(TEXTS), tuned.encode_text(TEXTS), rtol=0, atol=1e-5)


def _fit(run_dir, *overrides: str) -> str:
    """`python -m clip_train` in a subprocess; its console output."""
    command = [sys.executable, "-m", "clip_train", "debug=fast", "logger=[]", "trainer.enable_progress_bar=false",
               f"hydra.run.dir={run_dir}", *overrides]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout + done.stderr


@pytest.mark.slow
def test_lora_under_ddp_with_accumulation_resumes_to_the_uninterrupted_weights(tmp_path):
    """2 gloo processes, 2 micro-batches per step, adapter dropout on: resumed from step 2 of 4, the run ends on the
    weights of the run that was not interrupted; the logged trainable count is the adapters', projections' and
    temperature's, counted from the checkpoint."""
    common = ("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "optim.accumulate=2", "trainer.max_steps=4",
              "trainer.limit_val_batches=0", "eval=none", "callbacks.model_checkpoint.every_n_train_steps=2",
              "model.image_tower.lora.rank=4", "model.text_tower.lora.rank=4", "model.image_tower.lora.dropout=0.1",
              "model.text_tower.lora.dropout=0.1")  # fmt: skip
    output = _fit(tmp_path / "straight", *common)
    _fit(tmp_path / "resumed", *common, f"ckpt_path={tmp_path}/straight/checkpoints/step00000002.ckpt")
    straight, resumed = (
        read_checkpoint(str(tmp_path / name / "checkpoints" / "last.ckpt"), "test")["state_dict"]
        for name in ("straight", "resumed")
    )
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0, msg=key)
    counted = sum(v.numel() for k, v in straight.items() if ".lora_" in k or k.endswith(("projection.weight", "logit_scale")))
    total = sum(v.numel() for v in straight.values())
    adapters = sum(v.numel() for k, v in straight.items() if ".lora_" in k)
    assert f"trainable parameters: {counted:,} of {total:,}" in output and f"LoRA adapters: {adapters:,}" in output


@pytest.mark.slow
def test_wise_ft_of_a_lora_checkpoint_interpolates_its_merged_weights_with_the_source(lora_run, tmp_path):
    """The source as an export of the LoRA model's base (adapters dropped, not merged): WiSE-FT at alpha 1 is the merged
    model, at alpha 0 the base, at 0.5 their mean."""
    run_dir, _ = lora_run
    checkpoint = str(run_dir / "checkpoints" / "last.ckpt")
    base = clip_train.load(checkpoint)
    for tower in (base.image_tower, base.text_tower):
        tower.lora.tuner.unload()
        tower.lora = None
    export(ClipModel(base.network, base.tokenizer, replace(base.recipe, model=config_without_adapters(base.recipe.model))),
           str(tmp_path / "base"))  # fmt: skip
    export_main([f"checkpoint={checkpoint}", f"out={tmp_path}/merged"])
    merged_weights = clip_train.load(str(tmp_path / "merged")).state_dict()
    base_weights = clip_train.load(str(tmp_path / "base")).state_dict()
    for alpha, expected in ((1, merged_weights), (0, base_weights)):
        export_main(
            [f"checkpoint={checkpoint}", f"out={tmp_path}/{alpha}", f"wise_ft.source={tmp_path}/base", f"wise_ft.alpha={alpha}"]
        )
        mixed = clip_train.load(str(tmp_path / str(alpha))).state_dict()
        for key in expected:
            torch.testing.assert_close(mixed[key], expected[key], rtol=0, atol=0, msg=key)
    export_main([f"checkpoint={checkpoint}", f"out={tmp_path}/half", f"wise_ft.source={tmp_path}/base", "wise_ft.alpha=0.5"])
    half = clip_train.load(str(tmp_path / "half")).state_dict()
    layer = "image_tower.trunk.blocks.0.attn.qkv.weight"
    assert not torch.equal(merged_weights[layer], base_weights[layer])
    torch.testing.assert_close(half[layer], (merged_weights[layer] + base_weights[layer]) / 2)

    def evaluated(out: str, *overrides: str) -> dict:
        (tmp_path / out).mkdir()
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("evaluate", overrides=[*overrides, "eval.images_per_class=2", "eval.num_workers=0",
                                                 "eval.progress=false", f"paths.output_dir={tmp_path}/{out}"])  # fmt: skip
        return evaluate(cfg)

    sweep = evaluated("sweep", f"checkpoint={checkpoint}", f"wise_ft.source={tmp_path}/base", "wise_ft.alphas=[0,1]")
    alone = evaluated("alone", f"checkpoint={tmp_path}/merged")
    assert {name: value for name, value in alone.items() if isinstance(value, float)} == pytest.approx(
        {name: value for name, value in sweep["alpha=1"].items() if isinstance(value, float)}, abs=1e-6
    )
