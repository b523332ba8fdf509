"""Use a trained VLM: `clip_train.load_vlm(stage checkpoint)` with `.ask`, `.describe` and `.ground`.

    import clip_train
    vlm = clip_train.load_vlm("logs/vlm/runs/RUN/instruct/checkpoints/last.ckpt")
    vlm.ask("scene.png", "what color is the circle?")      # "red"
    vlm.describe("scene.png")                               # "a small red circle on the left"
    vlm.ground("scene.png", "red circle")                   # (x0, y0, x1, y1) in fractions of the side, or None

A stage checkpoint holds the whole model's weights (the tower's too), its tokenizer and its recipe, which carries
the tower's architecture and preprocessing (`clip_train.vlm.tower`), so it loads where the CLIP checkpoint is gone.
A stage checkpoint written before the recipe carried them still reads them from the CLIP checkpoint it names.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from clip_train.data.tokenizer import tokenizer_from_files
from clip_train.vlm.conversations import DESCRIBE, IMAGE
from clip_train.vlm.language_model import build_language_model, set_language_model_mode
from clip_train.vlm.model import VisionLanguageModel
from clip_train.vlm.stages import RECIPE_KEY, TOKENIZER_KEY
from clip_train.vlm.tower import TowerSource
from clip_train.vlm.vision import ImageFeatures
from clip_train.vlm.vqa import answer, box_from_tokens


@dataclass
class VisionLanguageAssistant:
    model: VisionLanguageModel
    tokenizer: object
    preprocess: Callable  # PIL image -> (3, S, S) pixels, as the tower was trained with
    recipe: dict  # the stage checkpoint's: vision settings, lm, connector, the tower's recipe, its held-out questions

    def ask(self, image: Image.Image | str, question: str, max_new_tokens: int = 32) -> str:
        """The greedy answer to one question about one image (a PIL image or a path)."""
        return answer(self.model, self.tokenizer, [(image, question)], self.preprocess, max_new_tokens)[0]

    def describe(self, image: Image.Image | str) -> str:
        return self.ask(image, DESCRIBE)

    def ground(self, image: Image.Image | str, phrase: str) -> tuple[float, ...] | None:
        """The box of `phrase` as the model gives it in location tokens, in fractions of the side; None if it gives none."""
        return box_from_tokens(self.ask(image, f"give the box of the {phrase}."))


def load_vlm(path: str, device: str | torch.device = "cpu") -> VisionLanguageAssistant:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if RECIPE_KEY not in checkpoint or TOKENIZER_KEY not in checkpoint:
        raise ValueError(f"{path} is not a clip_train.vlm stage checkpoint (it has no {RECIPE_KEY} and {TOKENIZER_KEY})")
    recipe = checkpoint[RECIPE_KEY]
    if "tower" in recipe:
        source = TowerSource.from_recipe(recipe["tower"], path)
    else:  # written before stage checkpoints carried the tower's recipe
        source = TowerSource.from_clip(recipe["vision"]["checkpoint"])
    tokenizer = tokenizer_from_files(checkpoint[TOKENIZER_KEY])
    language_model, _ = build_language_model(recipe["lm"], OmegaConf.create(recipe["lm_config"]), [], tokenizer)
    if recipe["lm_mode"] == "lora":
        language_model = set_language_model_mode(language_model, "lora", recipe["lora_rank"])
    vision = connector = None
    if not recipe["blind"]:
        settings = recipe["vision"]
        vision = ImageFeatures(source.tower, settings["layer"], settings["with_cls"])
        width = language_model.get_input_embeddings().embedding_dim
        connector = instantiate(OmegaConf.create(recipe["connector"]), image_width=vision.width, lm_width=width)
    model = VisionLanguageModel(language_model, tokenizer.convert_tokens_to_ids(IMAGE), vision, connector)
    model.load_state_dict({k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()})
    return VisionLanguageAssistant(model.eval().to(device), tokenizer, source.preprocess, recipe)
