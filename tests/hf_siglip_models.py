"""Small transformers SigLIP models with random weights, saved as a hub folder is laid out."""

import json
import os

import torch
from hf_clip_models import clip_tokenizer
from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

CONTEXT_LENGTH = 64  # transformers' zero-shot pipeline pads SigLIP's text to 64 tokens, as google/siglip-* were trained


def save_small_siglip(folder: str, seed: int = 0) -> SiglipModel:
    """A SiglipModel (ViT of 2 layers, 32 wide, 8-px patches at 32 px, attention-pooled; text of 2 layers, 32 wide,
    64 positions; the 32-d space of both), its preprocessor (mean and std 0.5, the whole image resized to 32 px) and
    a tokenizer that, as SigLIP's, gives no attention mask (the model attends to pads), saved to `folder`; returned
    in eval mode."""
    tokenizer = clip_tokenizer()
    config = SiglipConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=CONTEXT_LENGTH, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=None, eos_token_id=tokenizer.eos_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                           patch_size=8),
    )  # fmt: skip
    torch.manual_seed(seed)
    model = SiglipModel(config).eval()
    with torch.no_grad():  # transformers initialises biases, norms, scale and bias to constants: make every weight count
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    with open(os.path.join(folder, "tokenizer_config.json")) as f:
        tokenizer_config = json.load(f)
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config | {"model_input_names": ["input_ids"]}, f)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return model
