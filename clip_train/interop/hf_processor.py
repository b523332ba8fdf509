"""The processor files of a transformers export: the tokenizer and a `CLIPImageProcessor`.

Both reproduce our evaluation inputs: the tokenizer gives our ids (it is our tokenizer, saved,
truncating at the context length; for SigLIP's text tower giving no attention mask), the image
processor our `eval_transform` (shorter side resized bicubic to the image size and centre crop,
or the whole image resized to the square, as the recipe's `image_resize` says; the recipe's
mean and std).
"""

import copy
import json
import os
from collections.abc import Sequence

from transformers import CLIPImageProcessor, PreTrainedTokenizerBase
from transformers.image_utils import PILImageResampling

from clip_train.inference import ClipModel
from clip_train.model import SiglipTextTower

# transformers' CLIPTextModel reads an end-of-text id of 2 as "pool at the highest id" (old hub configs)
LEGACY_ARGMAX_ID = 2


def end_of_text_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id a `CLIPTextModel` must pool at to take the state our text tower pools (the last attended one).

    Raises ValueError when no id does: the tokenizer has no end-of-text token, does not end each
    text with it, or has it at id 2, which transformers would read as the argmax rule.
    """
    eos = tokenizer.eos_token_id
    if eos is None or tokenizer("a photo")["input_ids"][-1] != eos:
        raise ValueError(
            f"the text tower cannot be a CLIPTextModel: the tokenizer ({type(tokenizer).__name__}) does not end "
            "each text with an end-of-text token, where transformers pools"
        )
    if eos == LEGACY_ARGMAX_ID and eos != len(tokenizer) - 1:
        raise ValueError(
            "the text tower cannot be a CLIPTextModel: the tokenizer's end of text is id 2, which transformers "
            "reads as 'pool at the highest id' (a tokenizer learnt before end of text moved to the last id; retrain)"
        )
    return eos


def _declare_input_names(folder: str, names: list[str]) -> None:
    """Make the saved tokenizer in `folder` return only `names` (tokenizer_config.json's `model_input_names`,
    which `save_pretrained` does not write from the attribute)."""
    path = os.path.join(folder, "tokenizer_config.json")
    with open(path) as f:
        config = json.load(f)
    with open(path, "w") as f:
        json.dump(config | {"model_input_names": names}, f, indent=2)


def save_processor_files(model: ClipModel, out: str) -> None:
    """Write the tokenizer and `preprocessor_config.json` (a `CLIPImageProcessor`) into `out`."""
    tokenizer = copy.deepcopy(model.tokenizer)
    tokenizer.model_max_length = model.model.context_length  # truncation=True cuts where ours does
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(out)
    if isinstance(model.model.text_tower, SiglipTextTower):  # SigLIP's text model reads no mask: give none
        _declare_input_names(out, ["input_ids"])
    recipe = model.recipe
    image_processor(model.model.image_size, recipe.image_resize, recipe.image_mean, recipe.image_std).save_pretrained(out)


def image_processor(size: int, resize: str, mean: Sequence[float], std: Sequence[float]) -> CLIPImageProcessor:
    """A `CLIPImageProcessor` doing our `eval_transform(size, mean, std, resize)`: the shorter side resized bicubic
    to `size` and the centre cropped (`resize="shortest"`), or the whole image resized to the square ("squash")."""
    crop = resize == "shortest"
    return CLIPImageProcessor(
        do_resize=True, size={"shortest_edge": size} if crop else {"height": size, "width": size},
        resample=PILImageResampling.BICUBIC, do_center_crop=crop, crop_size={"height": size, "width": size},
        do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, image_mean=list(mean), image_std=list(std), do_convert_rgb=True,
    )  # fmt: skip
