"""A published CLIP in our terms: what every format's reader returns.

Every reader (transformers `CLIPModel` and `SiglipModel` folders in `hf_read`, OpenCLIP checkpoints in
`open_clip_read`) returns the same `PretrainedCLIP`, so training and export never see
foreign key names or configs; `clip_train.interop.reader.init_from` picks the reader.
"""

from dataclasses import dataclass, field

import torch

OPEN_CLIP_FOLDER_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
OPEN_CLIP_FOLDER_CONFIG = "open_clip_config.json"


@dataclass
class PretrainedCLIP:
    """A CLIP's architecture, weights and tokenizer, ready for `instantiate` + `load_state_dict(strict=True)`.

    model_config: a Hydra config dict for `clip_train.model.DualEncoder` (`_target_`, embed_dim,
        image_size, context_length, init_logit_scale, max_logit_scale, and `image_tower` /
        `text_tower` dicts with their own `_target_`). The image tower is an `ImageTower` on a timm
        CLIP-layout ViT (`vit_base_patch32_clip_224`, `..._quickgelu_224`, ...: pre-norm, no patch
        bias), with `width`, `depth`, `num_heads`, `patch_size`, `act_layer` given where the
        architecture's own differ; the text tower a `CausalTextTower` with its `vocab_size`,
        `eos_token_id` and `activation` filled in.
    state_dict: every weight, keyed as our `DualEncoder` names them: `image_tower.trunk.*` (timm's
        names), `image_tower.projection.weight` (embed_dim, width), `text_tower.transformer.*` (the
        installed transformers' `CLIPTextModel` names), `text_tower.projection.weight`, `logit_scale`.
    tokenizer: a local folder `transformers.AutoTokenizer` loads, whose ids the text weights were
        trained on; None when the source carries no tokenizer files.
    preprocessing: the `data.*` image preprocessing the weights were trained with, as far as the source
        says (`image_mean`, `image_std`, `image_resize`); a key the source does not give is absent.
    """

    model_config: dict
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    tokenizer: str | None = None
    preprocessing: dict = field(default_factory=dict)
