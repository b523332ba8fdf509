"""Our dual encoder as a transformers `VisionTextDualEncoderModel`, for any timm image trunk.

    vision_model: TimmWrapperModel(architecture, model_args)   pooler_output = trunk.forward_head(forward_features)
    visual_projection: our image projection                   = our ImageTower's pooled features, projected
    text_model: CLIPTextModel                                  pooler_output at the end of text, as ours
    text_projection, logit_scale: ours

`TimmWrapperModel` builds the trunk with `timm.create_model(architecture, num_classes=0, **model_args)`
and pools with timm's own `forward_head`, so the trunk's `global_pool` (token, avg, map) is kept
as it is. `VisionTextDualEncoderModel` sizes its visual projection from the vision config's
`hidden_size`, which a `TimmWrapperConfig` lacks: it is added as an extra config field.
"""

import json

import torch
from transformers import TimmWrapperConfig, VisionTextDualEncoderConfig, VisionTextDualEncoderModel

from clip_train.inference import ClipModel
from clip_train.interop.hf_clip_text import clip_text_config
from clip_train.interop.timm_tower import state_with_image_projection

OUR_PREFIX_TO_THEIRS = {
    "image_tower.trunk.": "vision_model.timm_model.",
    "image_tower.projection.": "visual_projection.",
    "text_tower.transformer.": "text_model.",  # both the installed CLIPTextModel's names
    "text_tower.projection.": "text_projection.",
    "logit_scale": "logit_scale",
}


def _timm_wrapper_config(model: ClipModel) -> TimmWrapperConfig:
    tower = model.image_tower
    arguments = {key: value for key, value in tower.timm_arguments.items() if key not in ("model_name", "num_classes")}
    try:
        json.dumps(arguments)
    except TypeError as error:
        raise ValueError(f"the image trunk's timm arguments {arguments} cannot be written to a config.json: {error}") from error
    return TimmWrapperConfig(
        architecture=tower.timm_arguments["model_name"], model_args=arguments, hidden_size=tower.trunk.num_features
    )


def as_dual_encoder_model(model: ClipModel) -> VisionTextDualEncoderModel:
    """A `VisionTextDualEncoderModel` holding `model`'s weights; ValueError naming what cannot be expressed."""
    dual_encoder = model.network
    config = VisionTextDualEncoderConfig.from_vision_text_configs(
        _timm_wrapper_config(model), clip_text_config(model),
        projection_dim=dual_encoder.embed_dim, logit_scale_init_value=dual_encoder.logit_scale.item(),
    )  # fmt: skip
    exported = VisionTextDualEncoderModel(config)
    ours = state_with_image_projection(dual_encoder)
    weights, unplaced = {}, []
    for key, value in ours.items():
        prefix = next((prefix for prefix in OUR_PREFIX_TO_THEIRS if key.startswith(prefix)), None)
        if prefix is None:
            unplaced.append(key)
        else:
            value = value.reshape(()) if key == "logit_scale" else value  # transformers keeps it 0-d
            weights[OUR_PREFIX_TO_THEIRS[prefix] + key.removeprefix(prefix)] = value
    if unplaced:
        raise ValueError(f"weights a VisionTextDualEncoderModel has no place for: {unplaced[:5]}")
    with torch.no_grad():
        exported.load_state_dict(weights, strict=True)
    return exported.eval()
