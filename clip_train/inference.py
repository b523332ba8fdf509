"""Use a trained model without Lightning: load, encode images and texts, classify zero-shot.

    import clip_train
    model = clip_train.load("logs/train/runs/RUN/checkpoints/last.ckpt")   # or an exported folder
    images = model.encode_image([PIL.Image.open("cat.jpg")])               # (N, D), unit norm
    texts = model.encode_text(["a photo of a cat", "a photo of a dog"])   # (M, D), unit norm
    probs = model.classify(images_or_pils, ["cat", "dog"])                # (N, C)
    captions = model.caption([PIL.Image.open("cat.jpg")], beams=3)        # CoCa models only: ["a cat ..."]

Loading reads tensors and plain data only (`torch.load(weights_only=True)` or safetensors), so
no pickled code from a checkpoint ever runs; a GPU checkpoint loads on a CPU-only machine.
"""

import functools
import os
from collections.abc import Sequence

import torch
from hydra.utils import instantiate
from PIL import Image
from safetensors.torch import load_file
from transformers import PreTrainedTokenizerBase

from clip_train.checkpoint_file import is_sharded_checkpoint, read_checkpoint
from clip_train.data.eval_preprocess import eval_pixels
from clip_train.data.tokenizer import Tokenize, load_tokenizer, start_and_end_ids, tokenizer_from_files
from clip_train.data.transforms import eval_transform
from clip_train.model import DualEncoder
from clip_train.model.checkpoint_keys import match_model_state
from clip_train.model.weight_sources import without_weight_sources
from clip_train.recipe import RECIPE_FILE, Recipe
from clip_train.text_classifier import DEFAULT_TEMPLATES, class_weights

WEIGHTS_FILE = "model.safetensors"


class ClipModel:
    """A dual encoder with its tokenizer and image preprocessing, in evaluation mode."""

    def __init__(self, model: DualEncoder, tokenizer: PreTrainedTokenizerBase, recipe: Recipe):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.tokenize = Tokenize(tokenizer, model.context_length)  # exactly as in training
        self.recipe = recipe
        self.preprocess = eval_transform(model.image_size, recipe.image_mean, recipe.image_std, recipe.image_resize)
        # encoded bytes -> pixels as validation in training makes them (the evaluation readers' path)
        self.preprocess_encoded = functools.partial(
            eval_pixels,
            image_size=model.image_size,
            mean=recipe.image_mean,
            std=recipe.image_std,
            resize=recipe.image_resize,
        )

    @property
    def device(self) -> torch.device:
        return self.model.logit_scale.device

    def to(self, device: str | torch.device) -> "ClipModel":
        self.model.to(device)
        return self

    @torch.no_grad()
    def encode_image(self, images: Sequence[Image.Image | str], batch_size: int = 64) -> torch.Tensor:
        """PIL images or paths -> (N, D) float32, L2-normalised, on the model's device."""
        features = []
        for start in range(0, len(images), batch_size):
            features.append(self.model.encode_image(self._pixels(images[start : start + batch_size])).float())
        return torch.cat(features) if features else torch.zeros(0, self.model.embed_dim, device=self.device)

    def _pixels(self, images: Sequence[Image.Image | str]) -> torch.Tensor:
        chunk = [Image.open(i) if isinstance(i, str | os.PathLike) else i for i in images]
        return torch.stack([self.preprocess(image.convert("RGB")) for image in chunk]).to(self.device)

    @torch.no_grad()
    def caption(
        self, images: Sequence[Image.Image | str], beams: int = 1, max_length: int | None = None, batch_size: int = 64
    ) -> list[str]:
        """PIL images or paths -> one caption each: greedy (`beams=1`) or beam search, at most `max_length`
        tokens with the start and end tokens (default: the model's context length). CoCa models only."""
        if not hasattr(self.model, "generate"):
            raise TypeError(f"{type(self.model).__name__} has no caption decoder: train a CoCa model (model=coca_tiny)")
        bos_id, eos_id = start_and_end_ids(self.tokenizer)
        captions = []
        for start in range(0, len(images), batch_size):
            pixels = self._pixels(images[start : start + batch_size])
            ids = self.model.generate(pixels, bos_id, eos_id, max_length=max_length, beams=beams)
            captions.extend(text.strip() for text in self.tokenizer.batch_decode(ids, skip_special_tokens=True))
        return captions

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Strings -> (M, D) float32, L2-normalised, on the model's device."""
        features = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenize(list(texts[start : start + batch_size]))
            ids, mask = tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)
            features.append(self.model.encode_text(ids, mask).float())
        return torch.cat(features) if features else torch.zeros(0, self.model.embed_dim, device=self.device)

    @torch.no_grad()
    def classify(
        self,
        images: Sequence[Image.Image | str] | torch.Tensor,
        classnames: Sequence[str],
        templates: Sequence[str] | None = None,
    ) -> torch.Tensor:
        """Zero-shot class probabilities (N, C): softmax over exp(logit_scale) × cosine to each class,
        whose weight is the normalised mean of its prompts' embeddings. `images` may be features (N, D)."""
        image_features = images if isinstance(images, torch.Tensor) else self.encode_image(images)
        weights = class_weights(self.encode_text, classnames, templates or DEFAULT_TEMPLATES)
        return (self.model.logit_scale.exp() * image_features @ weights.T).softmax(dim=-1)


def _build(recipe: Recipe, state_dict: dict[str, torch.Tensor], tokenizer: PreTrainedTokenizerBase, source: str):
    try:
        model = instantiate(without_weight_sources(recipe.model))  # the weights come from the checkpoint
    except Exception as error:  # an unknown timm or transformers architecture, or a missing local path
        raise ValueError(
            f"{source}: cannot build its model ({error.__class__.__name__}: {error}); its recipe names a timm or "
            "transformers architecture this installation does not have, or (written before issue 23) a transformers "
            "folder whose config.json is gone"
        ) from error
    missing, unexpected = model.load_state_dict(match_model_state(state_dict, model.state_dict()), strict=False)
    if missing or unexpected:
        raise ValueError(f"{source}: weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return ClipModel(model, tokenizer, recipe)


def _load_checkpoint(path: str) -> ClipModel:
    checkpoint = read_checkpoint(path, "clip_train.load")
    try:
        recipe = Recipe.from_checkpoint(checkpoint)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    if recipe is None or recipe.tokenizer_files is None or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a clip_train checkpoint: it has no state_dict and model recipe (with its tokenizer)")
    weights = checkpoint.get("ema_state_dict", checkpoint["state_dict"])  # a run with optim.ema: its average
    state_dict = {k.removeprefix("model."): v for k, v in weights.items() if k.startswith("model.")}
    return _build(recipe, state_dict, tokenizer_from_files(recipe.tokenizer_files), path)


def _load_export(folder: str) -> ClipModel:
    try:
        recipe = Recipe.read(folder)
    except ValueError as error:
        raise ValueError(f"{folder}: {error}") from error
    weights_path = os.path.join(folder, WEIGHTS_FILE)
    if recipe is None or not os.path.isfile(weights_path):
        raise ValueError(
            f"{folder} is not an exported clip_train model: it lacks {RECIPE_FILE} or {WEIGHTS_FILE} "
            "(a transformers CLIPModel folder trains on with model=clip_pretrained model.init_from=FOLDER)"
        )
    return _build(recipe, load_file(weights_path), load_tokenizer(folder), folder)


def load(path: str, device: str | torch.device = "cpu") -> ClipModel:
    """A `ClipModel` from a Lightning checkpoint (`.ckpt`, or a sharded checkpoint folder) or a folder written by
    `clip_train.export`."""
    if os.path.isdir(path) and not is_sharded_checkpoint(path):
        model = _load_export(path)
    elif os.path.exists(path):
        model = _load_checkpoint(path)
    else:
        raise FileNotFoundError(f"{path} does not exist")
    return model.to(device)
