"""export format=hf: checkpoint -> export -> transformers loaders -> our embeddings, ids and probabilities."""

import json
import os
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from helpers import COLORS, colour_samples
from hf_clip_models import save_small_clip
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from readme_code import python_code, readme_section
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoImageProcessor,
    AutoModel,
    AutoTokenizer,
    CLIPModel,
    PreTrainedTokenizerFast,
    VisionTextDualEncoderModel,
    pipeline,
)

import clip_train
from clip_train.data.shard_writer import write_shards
from clip_train.data.tokenizer import END, PAD, START, train_caption_tokenizer
from clip_train.export import main as export_main
from clip_train.inference import ClipModel
from clip_train.interop import init_from
from clip_train.interop.hf_write import write_hf
from clip_train.paths import CONFIG_DIR
from clip_train.recipe import Recipe
from clip_train.train import run

TEXTS = ["a red square", "a blue square that is big", "something else entirely, with punctuation!", ""]
MEAN, STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


def _train(folder, *overrides: str) -> str:
    """3 steps on colour squares; returns the checkpoint."""
    write_shards(str(folder / "shards"), "train", colour_samples(40), samples_per_shard=10)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        run(compose("train", overrides=[
            f"paths.output_dir={folder}/run", "data=webdataset",
            f"data.train_shards='{folder}/shards/train-{{00000..00003}}.tar'", "data.batch_size=8", "data.num_workers=0",
            "trainer.max_steps=3", "logger=[]", "trainer.limit_val_batches=0", *overrides,
        ]))  # fmt: skip
    return str(folder / "run" / "checkpoints" / "last.ckpt")


@pytest.fixture(scope="module")
def fine_tuned_clip(tmp_path_factory):
    """A checkpoint fine-tuned from a small transformers CLIP: CLIP-layout ViT, CLIP tokenizer."""
    folder = tmp_path_factory.mktemp("fine_tuned_clip")
    save_small_clip(str(folder / "source"))
    return _train(folder, "model=clip_pretrained", f"model.init_from={folder}/source")


@pytest.fixture(scope="module")
def test_preset_checkpoint(tmp_path_factory):
    """A checkpoint of the test preset (timm test_vit, not CLIP-layout) with a learnt BPE tokenizer."""
    return _train(tmp_path_factory.mktemp("test_preset"), "model=test")


def _features(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def assert_same_embeddings(ours: ClipModel, theirs, folder: str, label: str) -> None:
    """`theirs` (loaded from `folder`) embeds our preprocessed images and its own tokenizer's ids as `ours` does."""
    images = [sample.image for sample in colour_samples(4)] + [colour_samples(1, size=50)[0].image.rotate(30)]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokens = tokenizer(TEXTS, padding="max_length", truncation=True, return_tensors="pt")
    assert tokens["input_ids"].tolist() == ours.tokenize(TEXTS)["input_ids"].tolist(), "token ids differ"
    # the PIL backend resizes as our eval transform does; the default torchvision one differs a little where it resizes
    pixels = AutoImageProcessor.from_pretrained(folder, backend="pil")(images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(
        torch.as_tensor(pixels), torch.stack([ours.preprocess(image) for image in images]), rtol=0, atol=0
    )
    pixels = torch.as_tensor(pixels)
    with torch.no_grad():
        image_difference = (F.normalize(_features(theirs.get_image_features(pixel_values=pixels)), dim=-1)
                            - ours.encode_image(images)).abs().max().item()  # fmt: skip
        text_difference = (F.normalize(_features(theirs.get_text_features(**tokens)), dim=-1)
                           - ours.encode_text(TEXTS)).abs().max().item()  # fmt: skip
    print(f"{label}: max abs difference image {image_difference:.2e}, text {text_difference:.2e}")
    assert image_difference < 1e-5 and text_difference < 1e-5
    assert theirs.logit_scale.item() == pytest.approx(ours.logit_scale.item(), abs=0)


def test_fine_tuned_clip_exports_as_a_clip_model_the_pipeline_runs(fine_tuned_clip, tmp_path):
    out = str(tmp_path / "hf")
    export_main([f"checkpoint={fine_tuned_clip}", f"out={out}", "format=hf"])
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["model_type"] == "clip"
    ours = clip_train.load(fine_tuned_clip)
    theirs = CLIPModel.from_pretrained(out).eval()
    assert_same_embeddings(ours, theirs, out, "CLIPModel (CLIP tokenizer)")
    images = [sample.image for sample in colour_samples(6)]
    classify = pipeline("zero-shot-image-classification", model=out, device="cpu")
    results = classify(images, candidate_labels=list(COLORS), hypothesis_template="a {} square")
    probs = torch.tensor([[next(r["score"] for r in result if r["label"] == name) for name in COLORS] for result in results])
    reference = ours.classify(images, list(COLORS), templates=["a {} square"])
    print(f"zero-shot pipeline: max abs probability difference {(probs - reference).abs().max().item():.2e}")
    torch.testing.assert_close(probs, reference, rtol=0, atol=1e-5)
    # and back: the export reads in as the weights we wrote
    state = init_from(out).state_dict
    for name, weight in ours.state_dict().items():
        torch.testing.assert_close(state[name], weight, rtol=0, atol=0)


def test_test_preset_exports_as_a_dual_encoder_over_timm(test_preset_checkpoint, tmp_path):
    out = str(tmp_path / "hf")
    export_main([f"checkpoint={test_preset_checkpoint}", f"out={out}", "format=hf"])
    theirs = AutoModel.from_pretrained(out).eval()
    assert isinstance(theirs, VisionTextDualEncoderModel)
    assert type(theirs.vision_model).__name__ == "TimmWrapperModel"
    assert_same_embeddings(clip_train.load(test_preset_checkpoint), theirs, out, "VisionTextDualEncoderModel test_vit")


def learnt_bpe_model(image_tower: dict, image_size: int) -> ClipModel:
    """A random small ClipModel with a learnt BPE tokenizer (end of text its highest id)."""
    tokenizer = train_caption_tokenizer([f"a {c} square" for c in COLORS] * 5 + TEXTS, vocab_size=300)
    config = {
        "_target_": "clip_train.model.DualEncoder", "embed_dim": 24, "image_size": image_size, "context_length": 12,
        "image_tower": {"_target_": "clip_train.model.ImageTower", "embed_dim": 24, "image_size": image_size, **image_tower},
        "text_tower": {"_target_": "clip_train.model.CausalTextTower", "embed_dim": 24, "vocab_size": len(tokenizer),
                       "width": 32, "layers": 2, "heads": 2, "context_length": 12, "eos_token_id": tokenizer.eos_token_id},
    }  # fmt: skip
    torch.manual_seed(0)
    model = instantiate(config)
    with torch.no_grad():  # norms start at constants: make every weight count
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    return ClipModel(model, tokenizer, Recipe(model=config, image_mean=MEAN, image_std=STD))


HYBRID_AVG = {"model_name": "vit_tiny_r_s16_p8_224", "patch_size": 4, "depth": 2, "pool": "avg"}
CLIP_LAYOUT = {"model_name": "vit_base_patch16_clip_224", "width": 32, "depth": 2, "num_heads": 2, "patch_size": 8}


@pytest.mark.parametrize(
    "image_tower, expected", [(HYBRID_AVG, VisionTextDualEncoderModel), (CLIP_LAYOUT, CLIPModel)], ids=["hybrid-avg", "clip"]
)
def test_learnt_tokenizer_models_export_with_their_pooling(tmp_path, image_tower, expected):
    ours = learnt_bpe_model(image_tower, image_size=32)
    write_hf(ours, str(tmp_path / "hf"))
    theirs = AutoModel.from_pretrained(str(tmp_path / "hf")).eval()
    assert type(theirs) is expected
    assert_same_embeddings(ours, theirs, str(tmp_path / "hf"), f"{expected.__name__} {image_tower['model_name']} (learnt BPE)")


def old_layout_tokenizer() -> PreTrainedTokenizerFast:
    """A BPE learnt as before end of text moved to the last id: pad 0, start 1, end 2."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=[PAD, START, END], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(TEXTS * 5, trainer=trainer)
    bpe.post_processor = processors.TemplateProcessing(single=f"{START} $A {END}", special_tokens=[(START, 1), (END, 2)])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=START, eos_token=END, pad_token=PAD)


def test_what_transformers_cannot_express_is_named_and_nothing_is_written(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(tmp_path / "bert")  # fmt: skip
    ours = learnt_bpe_model(CLIP_LAYOUT, image_size=32)
    config = {**ours.recipe.model, "text_tower": {
        "_target_": "clip_train.model.PretrainedTextTower", "name_or_path": str(tmp_path / "bert"), "embed_dim": 24,
        "vocab_size": 300, "pooling": "mean"}}  # fmt: skip
    bert_text = ClipModel(instantiate(config), ours.tokenizer, replace(ours.recipe, model=config))
    with pytest.raises(ValueError, match="the text tower \\(PretrainedTextTower, mean pooling\\) has no transformers form"):
        write_hf(bert_text, str(tmp_path / "bert_export"))
    old_layout = ClipModel(ours.network, old_layout_tokenizer(), ours.recipe)
    with pytest.raises(ValueError, match="end of text is id 2"):
        write_hf(old_layout, str(tmp_path / "old_export"))
    assert not (tmp_path / "bert_export").exists() and not (tmp_path / "old_export").exists()


def test_clip_train_format_files_are_not_taken_for_transformers_files(test_preset_checkpoint, tmp_path):
    out = tmp_path / "export"
    export_main([f"checkpoint={test_preset_checkpoint}", f"out={out}"])
    assert {"clip_train_config.json", "clip_train_preprocess.json"} <= set(os.listdir(out))
    assert not {"config.json", "preprocessor_config.json"} & set(os.listdir(out))
    texts = clip_train.load(str(out)).encode_text(TEXTS)
    (out / "clip_train_config.json").rename(out / "config.json")  # an export written before the rename
    (out / "clip_train_preprocess.json").rename(out / "preprocessor_config.json")
    torch.testing.assert_close(clip_train.load(str(out)).encode_text(TEXTS), texts, rtol=0, atol=0)


def test_readme_transformers_code_runs(fine_tuned_clip, tmp_path, monkeypatch):
    """The README's "Handing a model to transformers" code, on an export of a fine-tuned CLIP and one image."""
    import re

    section = readme_section("## Handing a model to transformers")
    command = re.search(r"python -m clip_train.export (.*)\n", section).group(1).replace("PATH", fine_tuned_clip)
    monkeypatch.chdir(tmp_path)
    export_main(command.split())
    os.makedirs("photos")
    colour_samples(1)[0].image.save("photos/0.png")
    namespace = {}
    exec(compile(python_code("## Handing a model to transformers"), "README.md", "exec"), namespace)
    assert namespace["probs"].shape == (1, 2)


def test_export_command_dispatches_open_clip(fine_tuned_clip, tmp_path):
    """format=open_clip goes to the OpenCLIP writer (tested in test_open_clip_format); here only that the command
    reaches it and OpenCLIP's own model gives our embeddings for the fine-tuned CLIP."""
    open_clip = pytest.importorskip("open_clip")
    export_main([f"checkpoint={fine_tuned_clip}", f"out={tmp_path}/oc", "format=open_clip"])
    theirs, _, _ = open_clip.create_model_and_transforms(f"local-dir:{tmp_path}/oc", pretrained="none")
    ours = clip_train.load(fine_tuned_clip)
    pixels = torch.stack([ours.preprocess(sample.image) for sample in colour_samples(4)])
    ids = open_clip.get_tokenizer(f"local-dir:{tmp_path}/oc")(TEXTS)
    with torch.no_grad():
        image_difference = (theirs.eval().encode_image(pixels, normalize=True) - ours.encode_pixels(pixels)).abs().max()
        text_difference = (theirs.encode_text(ids, normalize=True) - ours.encode_text(TEXTS)).abs().max()
    print(f"format=open_clip: max abs difference image {image_difference:.2e}, text {text_difference:.2e}")
    assert image_difference < 1e-5 and text_difference < 1e-5
    with pytest.raises(ValueError, match="format='onnx': expected one of clip_train, hf, open_clip"):
        export_main([f"checkpoint={fine_tuned_clip}", f"out={tmp_path}/x", "format=onnx"])
