"""Small transformers CLIP models with random weights, saved as a hub folder is laid out."""

import torch
from tokenizers import pre_tokenizers
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

COLOUR_MERGES = [("r", "e"), ("re", "d</w>"), ("b", "l"), ("bl", "u"), ("blu", "e</w>"), ("s", "q"), ("sq", "u"),
                 ("squ", "a"), ("squa", "r"), ("squar", "e</w>")]  # fmt: skip


def clip_tokenizer() -> CLIPTokenizer:
    """OpenAI CLIP's BPE layout on a tiny vocabulary: the 256 byte symbols, each also as word end
    (`</w>`), a few merges for the colour captions, then start and end of text as the last two ids."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = alphabet + [symbol + "</w>" for symbol in alphabet] + ["".join(pair) for pair in COLOUR_MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={token: i for i, token in enumerate(tokens)}, merges=COLOUR_MERGES)


def save_small_clip(folder: str, hidden_act: str = "quick_gelu", seed: int = 0) -> CLIPModel:
    """A CLIPModel (ViT of 2 layers, 48 wide, 8-px patches at 32 px; text of 2 layers, 32 wide, 16
    tokens; 24-d space) with its tokenizer, saved to `folder`; returned in eval mode."""
    tokenizer = clip_tokenizer()
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16, hidden_act=hidden_act,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(hidden_size=48, intermediate_size=192, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                           patch_size=8, hidden_act=hidden_act),
        projection_dim=24,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    with torch.no_grad():  # transformers initialises biases and norms to constants: make every weight count
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model
