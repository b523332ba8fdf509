"""A transformers folder's image preprocessing, in our data keys: what a source's pixels were normalised and resized by.

    preprocessor_config.json (a `CLIPImageProcessor`'s, a `SiglipImageProcessor`'s, ...) ->
    {"image_mean": [...], "image_std": [...], "image_resize": "shortest" | "squash"}

A processor that centre-crops (CLIP's `do_center_crop`) resizes the shorter side first: our `shortest`; one that
does not resizes the whole image to the model's square (SigLIP's `size: {height, width}`): our `squash`. A folder
without the file says nothing, and the run keeps its own settings.
"""

import json
import os

PREPROCESSOR_FILE = "preprocessor_config.json"


def read_preprocessing(folder: str) -> dict:
    """The `data.*` preprocessing keys the processor in `folder` implies; {} when it has no preprocessor config."""
    path = os.path.join(folder, PREPROCESSOR_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        processor = json.load(f)
    preprocessing = {"image_resize": "shortest" if processor.get("do_center_crop") else "squash"}
    for key in ("image_mean", "image_std"):
        if processor.get(key) is not None:
            preprocessing[key] = [float(value) for value in processor[key]]
    return preprocessing
