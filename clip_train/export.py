"""Export a checkpoint for `clip_train.load`, for transformers, or for OpenCLIP.

    python -m clip_train.export checkpoint=logs/train/runs/RUN/checkpoints/last.ckpt out=exported/ [format=FORMAT]

format=clip_train (default): the folder `clip_train.load` reads without Lightning: `model.safetensors`
    (the dual encoder), `clip_train_config.json` (the model recipe), the tokenizer files,
    `clip_train_preprocess.json` (image size, mean, std, resize and crop), and, for a timm image tower
    (`ImageTower`), `image_tower/`: the image trunk alone, loadable by timm for reuse as a vision encoder:

        timm.create_model(ARCH, pretrained=True, num_classes=0, img_size=SIZE,
                          pretrained_cfg_overlay=dict(file="exported/image_tower/model.safetensors"))

    with ARCH and SIZE from `image_tower/config.json`. (The JSON files are named so that
    transformers' AutoConfig and AutoImageProcessor do not take them for theirs.)
format=hf: a transformers `CLIPModel` or `VisionTextDualEncoderModel` folder (`clip_train.interop.hf_write`).
format=open_clip: an OpenCLIP checkpoint (`clip_train.interop.open_clip_write`).
A `python -m clip_train.vlm` stage checkpoint exports with format=hf as a transformers `LlavaForConditionalGeneration`
(`clip_train.vlm.hf_llava`).

Every format gets plain weights: a model trained with LoRA adapters (`clip_train.model.lora`) has them merged
into its layers first (`merged`), and its recipe then builds the towers without adapters.
"""

import json
import os
import sys
from collections.abc import Callable
from dataclasses import replace

from safetensors.torch import save_file

from clip_train.cli import refuse_repeated_keys
from clip_train.inference import WEIGHTS_FILE, ClipModel, load
from clip_train.model import ImageTower
from clip_train.model.lora import config_without_adapters, merge_adapters_

FORMATS = ("clip_train", "hf", "open_clip")
PREPROCESS_FILE = "clip_train_preprocess.json"


def merged(model: ClipModel) -> ClipModel:
    """`model` with its LoRA adapters merged into plain weights (in place), and a recipe without them; as it is
    when it has none."""
    if not merge_adapters_(model.network):
        return model
    return ClipModel(model.network, model.tokenizer, replace(model.recipe, model=config_without_adapters(model.recipe.model)))


def export(model: ClipModel, out: str) -> None:
    """Write `model` to the folder `out` in the clip_train format."""
    os.makedirs(out, exist_ok=True)
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, os.path.join(out, WEIGHTS_FILE))
    model.recipe.write(out)
    model.tokenizer.save_pretrained(out)
    size = model.image_size
    squash = model.recipe.image_resize == "squash"
    preprocessing = {"image_size": size, "resize": "whole image, bicubic" if squash else "shorter side, bicubic",
                     "crop": None if squash else "center",
                     "image_mean": list(model.recipe.image_mean), "image_std": list(model.recipe.image_std)}  # fmt: skip
    with open(os.path.join(out, PREPROCESS_FILE), "w") as f:
        json.dump(preprocessing, f, indent=2)
    if isinstance(model.image_tower, ImageTower):
        _write_timm_trunk(model.image_tower, os.path.join(out, "image_tower"), preprocessing)


def _write_timm_trunk(tower: ImageTower, folder: str, preprocessing: dict) -> None:
    """The timm trunk alone into `folder`: its weights and the `timm.create_model` arguments that rebuild it."""
    os.makedirs(folder, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tower.trunk.state_dict().items()}, os.path.join(folder, WEIGHTS_FILE))
    arguments = tower.timm_arguments
    timm_config = {"architecture": arguments["model_name"], "num_classes": 0, "img_size": preprocessing["image_size"],
                   "global_pool": arguments["global_pool"], **preprocessing}  # fmt: skip
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(timm_config, f, indent=2)


def writer(format: str) -> Callable[[ClipModel, str], None]:
    """The function writing `format` (one of `FORMATS`); the foreign writers are imported only when asked for."""
    if format == "clip_train":
        return export
    if format == "hf":
        from clip_train.interop.hf_write import write_hf

        return write_hf
    if format == "open_clip":
        from clip_train.interop.open_clip_write import write_open_clip

        return write_open_clip
    raise ValueError(f"format={format!r}: expected one of {', '.join(FORMATS)}")


def write_vlm_stage(options: dict[str, str], format: str) -> None:
    """Export the VLM stage checkpoint `options["checkpoint"]` (format=hf only: the stage is self-contained already)."""
    if format != "hf" or "wise_ft.source" in options:
        sys.exit(f"{options['checkpoint']} is a VLM stage checkpoint: it exports with format=hf alone (no wise_ft)")
    from clip_train.vlm.hf_llava import write_llava

    write_llava(options["checkpoint"], options["out"])
    print(f"exported {options['checkpoint']} to {options['out']} (hf: LlavaForConditionalGeneration)")


def main(argv: list[str]) -> None:
    refuse_repeated_keys(argv)
    options = dict(arg.split("=", 1) for arg in argv)
    if not {"checkpoint", "out"} <= set(options) <= {"checkpoint", "out", "format", "wise_ft.source", "wise_ft.alpha"}:
        sys.exit(
            f"usage: python -m clip_train.export checkpoint=PATH out=DIR [format={'|'.join(FORMATS)}] "
            "[wise_ft.source=PATH wise_ft.alpha=A]"
        )
    if ("wise_ft.source" in options) != ("wise_ft.alpha" in options):
        sys.exit("wise_ft.source and wise_ft.alpha go together: the weights are (1 - alpha) * source + alpha * checkpoint")
    format = options.get("format", "clip_train")
    write = writer(format)  # an unknown format fails before the checkpoint is read
    from clip_train.vlm.hf_llava import is_vlm_stage  # here: the VLM's imports (Lightning, peft) only when exporting

    if is_vlm_stage(options["checkpoint"]):  # a clip_train.vlm stage: transformers' LLaVA is its one export
        return write_vlm_stage(options, format)
    model = merged(load(options["checkpoint"]))
    if "wise_ft.source" in options:
        from clip_train.wise_ft import interpolate

        model = interpolate(merged(load(options["wise_ft.source"])), model, float(options["wise_ft.alpha"]))
    write(model, options["out"])
    print(f"exported {options['checkpoint']} to {options['out']} ({format})")


if __name__ == "__main__":
    main(sys.argv[1:])
