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
    """A dual encoder with its tokenizer and image preprocessing, in evaluation mode: what `clip_train.load` returns.

    Callers use this object, never the network inside it: strings, images or paths in (`encode_text`,
    `encode_image`, `classify`, `caption`), or the tensors a batch holds (`encode_pixels` on (B, 3, H, W)
    preprocessed pixels, `encode_tokens` on (B, L) ids and mask), all returning float32 unit-norm (N, D) rows on
    the model's device. `embed_dim`, `image_size`, `context_length`, `logit_scale` and `logit_bias` describe the
    model; `image_tower`, `text_tower` and `state_dict()` are there for the converters that write its weights in
    another library's layout.

    Why a wrapper and not one class: the network (`network`, a `DualEncoder` or `CoCa`) is the `nn.Module` that
    Lightning trains, FSDP shards and checkpoints save, and it takes tensors only, as an OpenCLIP or transformers
    model does. The tokenizer, the preprocessing and the recipe belong to using a model, not to training it (as
    OpenCLIP hands out `model, preprocess, tokenizer` and transformers a model and a processor); this class
    bundles them with the network, so that a caller needs one object and no module internals. `network` stays
    public for the few that really need the module (merging adapters into it, loading other weights, compiling it).
    """

    def __init__(self, network: DualEncoder, tokenizer: PreTrainedTokenizerBase, recipe: Recipe):
        self.network = network.eval()
        self.tokenizer = tokenizer
        self.tokenize = Tokenize(tokenizer, network.context_length)  # exactly as in training
        self.recipe = recipe
        self.preprocess = eval_transform(network.image_size, recipe.image_mean, recipe.image_std, recipe.image_resize)
        # encoded bytes -> pixels as validation in training makes them (the evaluation readers' path)
        self.preprocess_encoded = functools.partial(
            eval_pixels,
            image_size=network.image_size,
            mean=recipe.image_mean,
            std=recipe.image_std,
            resize=recipe.image_resize,
        )

    @property
    def device(self) -> torch.device:
        return self.network.logit_scale.device

    @property
    def embed_dim(self) -> int:
        return self.network.embed_dim

    @property
    def image_size(self) -> int:
        return self.network.image_size

    @property
    def context_length(self) -> int:
        return self.network.context_length

    @property
    def logit_scale(self) -> torch.Tensor:
        """The log inverse temperature, (1,), detached."""
        return self.network.logit_scale.detach()

    @property
    def logit_bias(self) -> torch.Tensor | None:
        """SigLIP's logit bias, (1,), detached; None for a model trained without one."""
        return None if self.network.logit_bias is None else self.network.logit_bias.detach()

    @property
    def image_tower(self) -> torch.nn.Module:
        return self.network.image_tower

    @property
    def text_tower(self) -> torch.nn.Module:
        return self.network.text_tower

    @property
    def can_caption(self) -> bool:
        """Whether the network has a caption decoder (CoCa)."""
        return hasattr(self.network, "generate")

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The network's weights under its own names (`image_tower.…`, `text_tower.…`, `logit_scale`, …)."""
        return self.network.state_dict()

    def to(self, device: str | torch.device) -> "ClipModel":
        self.network.to(device)
        return self

    @torch.no_grad()
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Preprocessed pixels (B, 3, H, W), on any device -> (B, D) float32, L2-normalised, on the model's device."""
        return self.network.encode_image(pixels.to(self.device)).float()

    @torch.no_grad()
    def encode_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token ids and mask (B, L), as `tokenize` makes them -> (B, D) float32, L2-normalised, on the model's device."""
        return self.network.encode_text(input_ids.to(self.device), attention_mask.to(self.device)).float()

    def encode_image(self, images: Sequence[Image.Image | str], batch_size: int = 64) -> torch.Tensor:
        """PIL images or paths -> (N, D) float32, L2-normalised, on the model's device."""
        chunks = (images[start : start + batch_size] for start in range(0, len(images), batch_size))
        features = [self.encode_pixels(self._pixels(chunk)) for chunk in chunks]
        return torch.cat(features) if features else torch.zeros(0, self.embed_dim, device=self.device)

    def _pixels(self, images: Sequence[Image.Image | str]) -> torch.Tensor:
        chunk = [Image.open(i) if isinstance(i, str | os.PathLike) else i for i in images]
        return torch.stack([self.preprocess(image.convert("RGB")) for image in chunk])

    @torch.no_grad()
    def caption_ids(self, pixels: torch.Tensor, beams: int = 1, max_length: int | None = None) -> list[list[int]]:
        """Preprocessed pixels (B, 3, H, W) -> caption token ids per image, without the start and end tokens:
        greedy (`beams=1`) or beam search, at most `max_length` tokens with the start and end tokens (default: the
        model's context length). CoCa models only."""
        if not self.can_caption:
            raise TypeError(f"{type(self.network).__name__} has no caption decoder: train a CoCa model (model=coca_tiny)")
        bos_id, eos_id = start_and_end_ids(self.tokenizer)
        return self.network.generate(pixels.to(self.device), bos_id, eos_id, max_length=max_length, beams=beams)

    def caption(
        self, images: Sequence[Image.Image | str], beams: int = 1, max_length: int | None = None, batch_size: int = 64
    ) -> list[str]:
        """PIL images or paths -> one caption each (see `caption_ids`). CoCa models only."""
        if not self.can_caption:  # before reading any image
            raise TypeError(f"{type(self.network).__name__} has no caption decoder: train a CoCa model (model=coca_tiny)")
        captions = []
        for start in range(0, len(images), batch_size):
            ids = self.caption_ids(self._pixels(images[start : start + batch_size]), beams, max_length)
            captions.extend(text.strip() for text in self.tokenizer.batch_decode(ids, skip_special_tokens=True))
        return captions

    def encode_text(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Strings -> (M, D) float32, L2-normalised, on the model's device."""
        features = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenize(list(texts[start : start + batch_size]))
            features.append(self.encode_tokens(tokens["input_ids"], tokens["attention_mask"]))
        return torch.cat(features) if features else torch.zeros(0, self.embed_dim, device=self.device)

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
        return (self.logit_scale.exp() * image_features @ weights.T).softmax(dim=-1)


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
