"""The VLM's image tower with its preprocessing, and the recipe that rebuilds both without the CLIP checkpoint.

A stage checkpoint holds every weight of the tower it trained on (`vision.trunk.*`); what it also needs is the
tower's architecture and the image preprocessing the tower was trained with. `TowerSource.from_clip` takes both
from a clip_train checkpoint or export (`clip_train.load`); `recipe` is them as plain data (the CLIP recipe's
image-tower config with its weight sources off, `clip_train.model.weight_sources`, the image size, mean, std and
resize mode), which the stage checkpoint carries, and `TowerSource.from_recipe` rebuilds the tower from it with
random weights for the checkpoint's to fill, so a stage checkpoint loads where the CLIP checkpoint is gone.
"""

from collections.abc import Callable
from dataclasses import dataclass

from hydra.utils import instantiate
from torch import nn

from clip_train.data.transforms import eval_transform
from clip_train.inference import load
from clip_train.model.weight_sources import without_weight_sources

TOWER_KEYS = ("image_tower", "image_size", "image_mean", "image_std", "image_resize")


@dataclass
class TowerSource:
    """tower: the CLIP image tower (a module with a timm `trunk`); preprocess: PIL image -> (3, S, S) pixels as
    the tower saw them in CLIP evaluation; recipe: {TOWER_KEYS: plain data} that rebuilds both."""

    tower: nn.Module
    preprocess: Callable
    recipe: dict

    @property
    def image_size(self) -> int:
        return self.recipe["image_size"]

    @classmethod
    def from_clip(cls, path: str) -> "TowerSource":
        """The image tower, weights and all, of the clip_train checkpoint or export at `path`."""
        clip = load(path)
        model_config = without_weight_sources(clip.recipe.model)
        recipe = {
            "image_tower": model_config["image_tower"],
            "image_size": clip.image_size,
            "image_mean": list(clip.recipe.image_mean),
            "image_std": list(clip.recipe.image_std),
            "image_resize": clip.recipe.image_resize,
        }
        return cls(clip.image_tower, clip.preprocess, recipe)

    @classmethod
    def from_recipe(cls, recipe: dict, source: str) -> "TowerSource":
        """The tower `recipe` describes, random weights (a stage checkpoint's fill them); `source` names it in errors."""
        missing = [key for key in TOWER_KEYS if key not in recipe]
        if missing:
            raise ValueError(f"{source}: its image-tower recipe lacks {missing}")
        tower = instantiate(recipe["image_tower"])
        preprocess = eval_transform(recipe["image_size"], recipe["image_mean"], recipe["image_std"], recipe["image_resize"])
        return cls(tower, preprocess, recipe)
