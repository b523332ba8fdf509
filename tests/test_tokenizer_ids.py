"""The learnt tokenizer's start and end of text are ids that transformers' `CLIPTextModel` pools at correctly.

`CLIPTextModel` pools at the first end-of-text id of its config, except that an id of 2 marks an
old config and pools at the argmax of the ids. The learnt tokenizer used to put the end of text at
id 2, so a text tower exported with it pooled at whichever caption token had the highest id.
"""

import torch
from transformers import CLIPTextConfig, CLIPTextModel

from clip_train.data.tokenizer import Tokenize, train_caption_tokenizer

CAPTIONS = ["a red square", "a small blue circle to the left of a green triangle", "two yellow stars"] * 40


def test_clip_text_model_pools_at_the_end_of_text_of_every_caption():
    tokenizer = train_caption_tokenizer(CAPTIONS, vocab_size=400)
    tokens = Tokenize(tokenizer, context_length=16)(CAPTIONS[:3])
    torch.manual_seed(0)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=16, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    model = CLIPTextModel(config).eval()
    with torch.no_grad():
        outputs = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    end_of_text = tokens["attention_mask"].sum(dim=1) - 1  # right padding: the last attended position
    assert (tokens["input_ids"][torch.arange(3), end_of_text] == tokenizer.eos_token_id).all()
    expected = outputs.last_hidden_state[torch.arange(3), end_of_text]
    torch.testing.assert_close(outputs.pooler_output, expected)


def test_start_and_end_of_text_are_the_highest_ids_and_pad_is_zero():
    tokenizer = train_caption_tokenizer(CAPTIONS, vocab_size=400)
    top = max(tokenizer.get_vocab().values())
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, top - 1, top)
