"""export format=hf of a VLM stage: a transformers LLaVA whose image-text-to-text pipeline answers as `.ask` does.

The stages are real ones: `python -m clip_train.vlm stage=instruct` (its `run`) on a clip_train export of a tiny
CLIP- or SigLIP-layout tower, with a tiny Llama or GPT-2 trained from scratch long enough (40 steps) that its
greedy answers are words of the embedded world, not near-ties of random logits.
"""

import io
import json
import os

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image
from tiny_vlm import read_test_set, tiny_vlm
from torch import nn
from transformers import AutoProcessor, LlavaForConditionalGeneration, pipeline

import clip_train
from clip_train.data.tokenizer import train_caption_tokenizer
from clip_train.export import export
from clip_train.export import main as export_main
from clip_train.inference import ClipModel
from clip_train.model import ImageTower
from clip_train.paths import CONFIG_DIR
from clip_train.recipe import Recipe
from clip_train.vlm.assistant import VisionLanguageAssistant
from clip_train.vlm.hf_llava import as_llava
from clip_train.vlm.model import VisionLanguageModel
from clip_train.vlm.run import run
from clip_train.vlm.text import prompt_ids
from clip_train.vlm.vision import ImageFeatures

MEAN, STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
TOWERS = {
    "clip": {"model_name": "vit_base_patch16_clip_224", "width": 32, "depth": 3, "num_heads": 2, "patch_size": 8},
    "siglip": {"model_name": "vit_base_patch16_siglip_256", "width": 32, "depth": 3, "num_heads": 2, "patch_size": 8,
               "pool": "map", "projection": "none", "act_layer": "gelu_tanh"},
}  # fmt: skip
LMS = {
    "llama": ["lm_config.hidden_size=32", "lm_config.intermediate_size=64", "lm_config.num_attention_heads=2",
              "lm_config.num_key_value_heads=2"],
    "gpt2": ["vlm/lm_config@lm_config=gpt2_tiny", "lm_config.n_embd=32", "lm_config.n_head=2"],
}  # fmt: skip


def clip_export(folder, tower: str) -> str:
    """A clip_train export (random weights, norms perturbed so every weight counts) of a 32-px tower of `TOWERS`."""
    tokenizer = train_caption_tokenizer(["a red square", "a blue circle"] * 5, vocab_size=300)
    config = {
        "_target_": "clip_train.model.DualEncoder", "embed_dim": 32, "image_size": 32, "context_length": 12,
        "image_tower": {"_target_": "clip_train.model.ImageTower", "embed_dim": 32, "image_size": 32, **TOWERS[tower]},
        "text_tower": {"_target_": "clip_train.model.CausalTextTower", "embed_dim": 32, "vocab_size": len(tokenizer),
                       "width": 32, "layers": 1, "heads": 2, "context_length": 12, "eos_token_id": tokenizer.eos_token_id},
    }  # fmt: skip
    torch.manual_seed(0)
    model = instantiate(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    export(ClipModel(model, tokenizer, Recipe(model=config, image_mean=MEAN, image_std=STD)), str(folder))
    return str(folder)


def instruct_stage(folder, tower: str, lm: str, *overrides: str) -> str:
    """The instruct stage checkpoint of `python -m clip_train.vlm stage=instruct` on `tower`, with LM `lm` of `LMS`."""
    clip = clip_export(folder / "clip", tower)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("vlm", overrides=[
            f"paths.output_dir={folder}/vlm", f"paths.cache_dir={folder}/cache", "stage=instruct",
            f"vision.checkpoint={clip}", "data.scenes.num_train=40", "data.scenes.num_test=12", "data.scenes.image_size=48",
            "data.scenes.kinds=[color]",
            "data.batch_size=16", "stages.instruct.steps=150", "stages.instruct.lr=1e-2", "stages.instruct.warmup_steps=0",
            "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", *LMS[lm], *overrides,
        ])  # fmt: skip
    run(cfg)
    return str(folder / "vlm" / "instruct" / "checkpoints" / "last.ckpt")


def held_out_questions(checkpoint: str) -> list[tuple[Image.Image, str]]:
    """(image, question) of the stage's held-out questions: one of each type per scene, images 48 px."""
    recipe = torch.load(checkpoint, weights_only=True)["vlm_recipe"]
    return [
        (Image.open(io.BytesIO(c.image)).convert("RGB"), c.turns[0].question) for c in read_test_set(recipe["test_questions"])
    ]


def _messages(image: Image.Image, question: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}]


@torch.no_grad()
def assert_same_model(vlm, folder: str, questions) -> None:
    """The processor gives our prompt ids (<image> expanded to our image-token count) and our pixels; LLaVA gives our
    image tokens and our logits on them."""
    llava = LlavaForConditionalGeneration.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder, backend="pil")  # PIL resizes exactly as our eval transform
    for image, question in questions:
        inputs = processor.apply_chat_template(_messages(image, question), tokenize=True, return_dict=True,
                                               add_generation_prompt=True, return_tensors="pt")  # fmt: skip
        pixels = vlm.preprocess(image)[None]
        torch.testing.assert_close(inputs["pixel_values"], pixels, rtol=0, atol=0)
        ours = torch.tensor([prompt_ids(vlm.tokenizer, question, with_image=True)])
        tokens = vlm.model.connector(vlm.model.vision(pixels))
        at = ours[0].tolist().index(vlm.model.image_token_id)
        expanded = [*ours[0, :at].tolist(), *[vlm.model.image_token_id] * tokens.shape[1], *ours[0, at + 1 :].tolist()]
        assert inputs["input_ids"][0].tolist() == expanded
        theirs_tokens = llava.model.get_image_features(pixel_values=pixels).pooler_output[0]
        torch.testing.assert_close(theirs_tokens, tokens[0], rtol=0, atol=1e-5)
        embeds, _, _ = vlm.model.splice(ours, torch.ones_like(ours), pixels)
        logits = vlm.model.language_model(inputs_embeds=embeds).logits
        theirs = llava(**inputs).logits
        difference = (theirs - logits).abs().max().item()
        print(f"{question!r}: logits max abs difference {difference:.2e} (largest {logits.abs().max().item():.1f})")
        torch.testing.assert_close(theirs, logits, rtol=0, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize(
    "lm, overrides", [("llama", ["vision.layer=-2"]), ("gpt2", ["vision.layer=1", "vision.with_cls=true"])], ids=LMS
)
def test_the_pipeline_answers_as_ask_does(tmp_path, lm, overrides):
    stage = instruct_stage(tmp_path, "clip", lm, *overrides)
    out = str(tmp_path / "llava")
    export_main([f"checkpoint={stage}", f"out={out}", "format=hf"])
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    vlm = clip_train.load_vlm(stage)
    assert config["model_type"] == "llava" and config["text_config"]["model_type"] == {"llama": "llama", "gpt2": "gpt2"}[lm]
    assert config["vision_feature_select_strategy"] == ("full" if vlm.recipe["vision"]["with_cls"] else "default")
    questions = held_out_questions(stage)
    assert_same_model(vlm, out, questions[:3])
    answering = pipeline("image-text-to-text", model=out, device="cpu")
    answers = [vlm.ask(image, question) for image, question in questions]
    theirs = [
        answering(text=_messages(image, question), max_new_tokens=32,
                  generate_kwargs={"do_sample": False}, return_full_text=False)[0]["generated_text"].strip()
        for image, question in questions
    ]  # fmt: skip
    print(f"{len(answers)} answers, {len(set(answers))} distinct: {sorted(set(answers))}")
    assert theirs == answers
    assert len(set(answers)) > 1 and all(answer and "<" not in answer for answer in answers)  # words, not specials


def test_a_tower_without_class_token_gives_its_patch_tokens():
    """SigLIP's ViT has no prefix tokens, for which timm returns the patch tokens alone (this failed to unpack)."""
    tower = instantiate({"_target_": "clip_train.model.ImageTower", "embed_dim": 32, "image_size": 32, **TOWERS["siglip"]})
    pixels = torch.randn(2, 3, 32, 32)
    for with_cls in (False, True):
        tokens = ImageFeatures(tower, layer=-1, with_cls=with_cls)(pixels)
        torch.testing.assert_close(tower.trunk.norm(tokens), tower.trunk.forward_features(pixels))  # 4×4 patches, no more


@pytest.mark.slow
def test_a_siglip_tower_exports_as_llava_on_a_siglip_vision_model(tmp_path):
    stage = instruct_stage(tmp_path, "siglip", "llama", "stages.instruct.steps=2")
    out = str(tmp_path / "llava")
    export_main([f"checkpoint={stage}", f"out={out}", "format=hf"])
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    assert config["vision_config"]["model_type"] == "siglip_vision_model"
    assert config["vision_feature_select_strategy"] == "full" and config["image_seq_length"] == 16  # no class token
    assert_same_model(clip_train.load_vlm(stage), out, held_out_questions(stage)[:2])


class LinearConnector(nn.Module):
    """A connector LLaVA has no form for: one linear layer."""

    def __init__(self, image_width: int, lm_width: int):
        super().__init__()
        self.layer = nn.Linear(image_width, lm_width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.layer(tokens)


def _assistant(model, tokenizer) -> VisionLanguageAssistant:
    return VisionLanguageAssistant(model, tokenizer, None, {"tower": {"image_size": 32}})


def test_towers_and_connectors_llava_cannot_hold_are_refused_by_name():
    model, tokenizer = tiny_vlm()  # timm's test_vit: not CLIP's layout (no pre-norm, a patch embedding with bias)
    with pytest.raises(ValueError, match="VisionTransformer\\) is neither a transformers CLIP nor SigLIP vision model.*"
                       "As CLIP it lacks .*a LayerNorm before the blocks"):  # fmt: skip
        as_llava(_assistant(model, tokenizer))
    convnext = ImageFeatures(ImageTower("test_convnext", embed_dim=16, image_size=32, pool="avg"), layer=-1)
    with pytest.raises(ValueError, match="image tower \\(ConvNeXt\\) is neither.*ConvNeXt is not a timm VisionTransformer"):
        on_convnext = VisionLanguageModel(model.language_model, model.image_token_id, convnext, model.connector)
        as_llava(_assistant(on_convnext, tokenizer))
    model.connector = LinearConnector(model.vision.width, 32)
    with pytest.raises(ValueError, match="the connector LinearConnector has no form in LlavaForConditionalGeneration"):
        as_llava(_assistant(model, tokenizer))
    with pytest.raises(ValueError, match="written before stage checkpoints carried the tower's recipe"):
        as_llava(VisionLanguageAssistant(model, tokenizer, None, {}))
    blind, _ = tiny_vlm(blind=True)
    with pytest.raises(ValueError, match="a blind baseline has no image tower"):
        as_llava(_assistant(blind, tokenizer))
