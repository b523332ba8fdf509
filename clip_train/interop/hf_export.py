"""`export format=hf`: a folder transformers loads with `AutoModel` / `CLIPModel.from_pretrained` / `pipeline`.

    config.json, model.safetensors      a SiglipModel when the model has SigLIP's text tower (then its whole
                                        layout is required), a CLIPModel when the image trunk is a CLIP-layout
                                        ViT (both also pipeline("zero-shot-image-classification")), else a
                                        VisionTextDualEncoderModel over a TimmWrapperModel
    tokenizer files                     ours: AutoTokenizer gives our ids
    preprocessor_config.json            a CLIPImageProcessor doing our evaluation preprocessing

The transformers model is built and checked before anything is written: what it cannot express
raises ValueError naming the part, and it must give our embeddings on a random batch.
"""

import os

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from clip_train.inference import ClipModel
from clip_train.interop.hf_clip_export import as_clip_model, clip_layout_differences
from clip_train.interop.hf_dual_encoder_export import as_dual_encoder_model
from clip_train.interop.hf_processor import save_processor_files
from clip_train.interop.hf_siglip_export import as_siglip_model
from clip_train.interop.timm_tower import timm_image_tower
from clip_train.model import SiglipTextTower

TOLERANCE = 1e-4  # on unit vectors; float32 kernels in another order differ by ~1e-6


def as_transformers_model(model: ClipModel) -> PreTrainedModel:
    """A `SiglipModel` for SigLIP's layout, a `CLIPModel` where the image trunk allows, else a
    `VisionTextDualEncoderModel`, with `model`'s weights."""
    if isinstance(model.text_tower, SiglipTextTower):
        return as_siglip_model(model)
    if clip_layout_differences(timm_image_tower(model, "format=hf")):
        return as_dual_encoder_model(model)
    return as_clip_model(model)


def _features(output) -> torch.Tensor:
    """transformers 5 returns projected features as `pooler_output`, 4 as a tensor."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@torch.no_grad()
def check_same_features(model: ClipModel, exported: PreTrainedModel) -> None:
    """ValueError unless `exported` embeds a random batch and two captions as `model` does."""
    generator = torch.Generator().manual_seed(0)
    size = model.image_size
    pixels = torch.randn(2, 3, size, size, generator=generator).to(model.device)
    tokens = model.tokenize(["a photo of a cat", "two"])
    ids, mask = tokens["input_ids"].to(model.device), tokens["attention_mask"].to(model.device)
    exported = exported.to(model.device)
    text_inputs = {"input_ids": ids} if exported.config.model_type == "siglip" else {"input_ids": ids, "attention_mask": mask}
    pairs = {
        "image": (model.encode_pixels(pixels), _features(exported.get_image_features(pixel_values=pixels))),
        "text": (model.encode_tokens(ids, mask), _features(exported.get_text_features(**text_inputs))),
    }
    for side, (ours, theirs) in pairs.items():
        difference = (ours.float() - F.normalize(theirs.float(), dim=-1)).abs().max().item()
        if difference > TOLERANCE:
            raise ValueError(
                f"the exported {type(exported).__name__} would not reproduce our {side} embeddings "
                f"(max difference {difference:.2e} > {TOLERANCE}); nothing was written"
            )


def write_hf(model: ClipModel, out: str) -> None:
    """Write `model` to the folder `out` as a transformers model with its processor files."""
    exported = as_transformers_model(model)
    check_same_features(model, exported)
    os.makedirs(out, exist_ok=True)
    exported.save_pretrained(out)
    save_processor_files(model, out)
