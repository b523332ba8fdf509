"""The recipe: what rebuilds a trained model anywhere; the one reader and writer of a checkpoint's metadata.

`train.run` makes it, `ClipModule` stores it as plain data in the checkpoint's hyper-parameters
(so `torch.load(weights_only=True)` reads it), `clip_train.export` writes it beside the weights
as `clip_train_config.json`, and `clip_train.load` reads it back from either. Nothing else
knows its keys.

Layouts, by the `version` key:

    1 (no `version` key: checkpoints and exports before issue 15)
        {"model", "tokenizer", "tokenizer_files", "image_mean", "image_std"}; exports leave the two
        tokenizer keys out (the tokenizer's files lie beside it), and exports before issue 13 named
        the file `config.json`.
    2 the same keys, and `version`, so that a later layout change can be told apart and read. A CoCa
        model config no longer holds `caption_loss_weight` and `contrastive_loss_weight`: they moved to
        the objective (`loss=coca`), so reading version 1 drops them (they never shaped the model).
        An optional `image_resize` (evaluation resizing, `clip_train.data.transforms.RESIZE_MODES`) came
        with SigLIP sources; a recipe without it resizes `shortest`, as every model before did.
"""

import json
import os
from dataclasses import dataclass, replace

VERSION = 2
RECIPE_FILE = "clip_train_config.json"
# exports before issue 13 named the recipe config.json, which transformers' AutoConfig tries and rejects
LEGACY_RECIPE_FILE = "config.json"
REQUIRED_KEYS = ("model", "image_mean", "image_std")
# model-config keys of version 1 that were training settings, not architecture
VERSION_1_LOSS_KEYS = ("caption_loss_weight", "contrastive_loss_weight")


@dataclass(frozen=True)
class Recipe:
    """model: the resolved model config, a dict `hydra.utils.instantiate` builds the model from.
    image_mean, image_std: the per-channel normalisation the model was trained with (RGB, 0-1 scale).
    image_resize: how evaluation resizes an image to the model's square: "shortest" (shorter side, centre
        crop) or "squash" (the whole image).
    tokenizer_source: what `data.tokenizer` named (a hub name or folder; a learnt tokenizer's cache folder).
    tokenizer_files: the tokenizer itself, {file name: text}; a checkpoint carries it, an export has
        the files beside the recipe instead. None: not carried.
    version: the layout the recipe was read from (`to_dict` always writes `VERSION`'s).
    """

    model: dict
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    tokenizer_source: str | None = None
    tokenizer_files: dict[str, str] | None = None
    version: int = VERSION
    image_resize: str = "shortest"

    def to_dict(self) -> dict:
        """Plain data (dicts, lists, strings, numbers) in the current layout, for a checkpoint or JSON."""
        recipe = {
            "version": VERSION,
            "model": self.model,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "image_resize": self.image_resize,
        }
        if self.tokenizer_source is not None:
            recipe["tokenizer"] = self.tokenizer_source
        if self.tokenizer_files is not None:
            recipe["tokenizer_files"] = self.tokenizer_files
        return recipe

    @classmethod
    def from_dict(cls, recipe: dict) -> "Recipe":
        """A recipe of any layout up to `VERSION`; ValueError naming what is wrong with any other dict."""
        version = recipe.get("version", 1)
        if not isinstance(version, int) or not 1 <= version <= VERSION:
            raise ValueError(f"recipe version {version!r}: this clip_train reads versions 1 to {VERSION}; upgrade it")
        missing = [key for key in REQUIRED_KEYS if key not in recipe]
        if missing:
            raise ValueError(f"not a clip_train recipe: it lacks {', '.join(missing)}")
        model = dict(recipe["model"])
        if version == 1:
            model = {key: value for key, value in model.items() if key not in VERSION_1_LOSS_KEYS}
        return cls(
            model=model,
            image_mean=tuple(recipe["image_mean"]),
            image_std=tuple(recipe["image_std"]),
            tokenizer_source=recipe.get("tokenizer"),
            tokenizer_files=recipe.get("tokenizer_files"),
            version=version,
            image_resize=recipe.get("image_resize", "shortest"),
        )

    @classmethod
    def from_checkpoint(cls, checkpoint: object) -> "Recipe | None":
        """The recipe in a Lightning checkpoint's hyper-parameters (as `ClipModule` saves it), or None."""
        hyper_parameters = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
        recipe = hyper_parameters.get("recipe")
        return None if recipe is None else cls.from_dict(recipe)

    def write(self, folder: str) -> None:
        """Write the recipe into the export `folder`, without the tokenizer, whose files go beside it."""
        with open(os.path.join(folder, RECIPE_FILE), "w") as f:
            json.dump(replace(self, tokenizer_source=None, tokenizer_files=None).to_dict(), f, indent=2)

    @classmethod
    def read(cls, folder: str) -> "Recipe | None":
        """The recipe of the export in `folder`, or None if it has none. A legacy `config.json` that
        is not a recipe (a transformers model's, in the same folder) is no recipe."""
        if os.path.isfile(os.path.join(folder, RECIPE_FILE)):
            with open(os.path.join(folder, RECIPE_FILE)) as f:
                return cls.from_dict(json.load(f))
        if os.path.isfile(os.path.join(folder, LEGACY_RECIPE_FILE)):
            with open(os.path.join(folder, LEGACY_RECIPE_FILE)) as f:
                config = json.load(f)
            if all(key in config for key in REQUIRED_KEYS):
                return cls.from_dict(config)
        return None
