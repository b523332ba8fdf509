"""Export a checkpoint as a folder that `clip_train.load` reads without Lightning.

    python -m clip_train.export checkpoint=logs/train/runs/RUN/checkpoints/last.ckpt out=exported/

The folder holds `model.safetensors` (the dual encoder), `config.json` (the model recipe),
the tokenizer files, `preprocessor_config.json` (image size, mean, std, resize and crop), and
`image_tower/`: the image trunk alone, loadable by timm for reuse as a vision encoder:

    timm.create_model(ARCH, pretrained=True, num_classes=0, img_size=SIZE,
                      pretrained_cfg_overlay=dict(file="exported/image_tower/model.safetensors"))

with ARCH and SIZE from `image_tower/config.json`.
"""

import json
import os
import sys

from safetensors.torch import save_file

from clip_train.inference import CONFIG_FILE, WEIGHTS_FILE, ClipModel, load


def export(model: ClipModel, out: str) -> None:
    os.makedirs(os.path.join(out, "image_tower"), exist_ok=True)
    state = {name: tensor.contiguous() for name, tensor in model.model.state_dict().items()}
    save_file(state, os.path.join(out, WEIGHTS_FILE))
    recipe = {key: value for key, value in model.recipe.items() if key not in ("tokenizer_files", "tokenizer")}
    with open(os.path.join(out, CONFIG_FILE), "w") as f:
        json.dump(recipe, f, indent=2)
    model.tokenizer.save_pretrained(out)
    size = model.model.image_size
    preprocessing = {"image_size": size, "resize": "shorter side, bicubic", "crop": "center",
                     "image_mean": recipe["image_mean"], "image_std": recipe["image_std"]}  # fmt: skip
    with open(os.path.join(out, "preprocessor_config.json"), "w") as f:
        json.dump(preprocessing, f, indent=2)
    trunk = model.model.image_tower.trunk
    save_file({k: v.contiguous() for k, v in trunk.state_dict().items()}, os.path.join(out, "image_tower", WEIGHTS_FILE))
    tower = recipe["model"]["image_tower"]
    timm_config = {"architecture": tower["model_name"], "num_classes": 0, "img_size": size,
                   "global_pool": tower.get("pool", "token"), **preprocessing}  # fmt: skip
    with open(os.path.join(out, "image_tower", "config.json"), "w") as f:
        json.dump(timm_config, f, indent=2)


def main(argv: list[str]) -> None:
    options = dict(arg.split("=", 1) for arg in argv)
    if set(options) != {"checkpoint", "out"}:
        sys.exit("usage: python -m clip_train.export checkpoint=PATH out=DIR")
    export(load(options["checkpoint"]), options["out"])
    print(f"exported {options['checkpoint']} to {options['out']}")


if __name__ == "__main__":
    main(sys.argv[1:])
