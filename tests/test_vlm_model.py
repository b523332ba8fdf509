"""The VLM's parts: answer-only labels by hand, the loss against a naive per-sample masked loss, the image tokens
(layer, class token, connector shapes, freezing), and greedy answers against unpadded one-by-one decoding."""

import io

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from tiny_vlm import tiny_vlm

from clip_train.data.transforms import CLIP_MEAN, CLIP_STD, eval_transform
from clip_train.vlm.conversation_stream import PadConversations
from clip_train.vlm.conversations import Conversation, Turn
from clip_train.vlm.language_model import set_language_model_mode
from clip_train.vlm.text import IGNORE, encode_conversation, prompt_ids


def _conversation(*pairs) -> Conversation:
    return Conversation("unused.png", tuple(Turn(q, a, None) for q, a in pairs))


def test_labels_cover_the_answers_and_their_end_only():
    _, tokenizer = tiny_vlm()
    ids, labels = encode_conversation(
        tokenizer, _conversation(("what color is the square?", "red"), ("how many circles?", "2"))
    )
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens == [
        "<s>", "user", ":", "<image>", "what", "color", "is", "the", "square", "?", "assistant", ":", "red", "</s>",
        "user", ":", "how", "many", "circles", "?", "assistant", ":", "2", "</s>",
    ]  # fmt: skip
    answered = [i for i, label in enumerate(labels) if label != IGNORE]
    assert answered == [12, 13, 22, 23] and [labels[i] for i in answered] == [ids[i] for i in answered]
    blind_ids, _ = encode_conversation(tokenizer, _conversation(("what color is the square?", "red")), with_image=False)
    assert "<image>" not in tokenizer.convert_ids_to_tokens(blind_ids)


def _naive_loss(model, tokenizer, conversations, pixels) -> torch.Tensor:
    """Each sample alone, unpadded: image tokens concatenated in place of <image>, log-softmax of the next token,
    summed over answer positions; divided by the number of answer tokens in the batch."""
    total, count = 0.0, 0
    for row, conversation in enumerate(conversations):
        ids, labels = encode_conversation(tokenizer, conversation)
        at = ids.index(model.image_token_id)
        table = model.language_model.get_input_embeddings()
        image = model.connector(model.vision(pixels[row : row + 1]))[0]
        embeds = torch.cat([table(torch.tensor(ids[:at])), image, table(torch.tensor(ids[at + 1 :]))])
        targets = labels[:at] + [IGNORE] * len(image) + labels[at + 1 :]
        logits = model.language_model(inputs_embeds=embeds[None]).logits[0]
        for position in range(len(targets) - 1):
            if targets[position + 1] != IGNORE:
                total = total - F.log_softmax(logits[position], dim=-1)[targets[position + 1]]
                count += 1
    return total / count


def test_loss_equals_a_naive_masked_loss():
    model, tokenizer = tiny_vlm()
    conversations = [
        _conversation(("what color is the square?", "red")),
        _conversation(("how many circles are there?", "2"), ("what color is the square?", "blue green")),
        _conversation(("describe the image.", "red square")),
    ]
    png = io.BytesIO()
    Image.effect_noise((32, 32), 60).convert("RGB").save(png, format="PNG")
    conversations = [Conversation(png.getvalue(), c.turns) for c in conversations]
    batch = PadConversations(tokenizer, eval_transform(32, CLIP_MEAN, CLIP_STD))(conversations)
    assert batch["attention_mask"].sum(1).tolist() == [len(encode_conversation(tokenizer, c)[0]) for c in conversations]
    pixels = batch["pixels"]
    assert pixels.shape == (3, 3, 32, 32)
    loss = model(batch["input_ids"], batch["attention_mask"], batch["labels"], pixels)
    torch.testing.assert_close(loss, _naive_loss(model, tokenizer, conversations, pixels))


def test_image_tokens_come_from_the_chosen_layer_with_or_without_the_class_token():
    model, _ = tiny_vlm(layer=-1, with_cls=True)
    trunk = model.vision.trunk
    pixels = torch.randn(2, 3, 32, 32)
    tokens = model.vision(pixels)
    assert tokens.shape == (2, 1 + 4, trunk.num_features)  # class token + 2×2 patches of test_vit at 32 px
    torch.testing.assert_close(trunk.norm(tokens), trunk.forward_features(pixels))  # the last block, before the norm
    patches, _ = tiny_vlm(layer=-2)
    assert patches.vision(pixels).shape == (2, 4, trunk.num_features)
    assert patches.connector(patches.vision(pixels)).shape == (2, 4, 32)  # the LM's width
    assert not torch.allclose(patches.vision(pixels), tokens[:, 1:])


@pytest.mark.parametrize("unlocked", [0, 1])
def test_the_tower_is_frozen_or_its_top_layers_train(unlocked):
    model, tokenizer = tiny_vlm(unlocked_layers=unlocked)
    model.train()
    ids, labels = encode_conversation(tokenizer, _conversation(("what color is the square?", "red")))
    ids, labels = torch.tensor([ids]), torch.tensor([labels])
    model(ids, torch.ones_like(ids), labels, torch.randn(1, 3, 32, 32)).backward()
    trained = {name for name, p in model.vision.trunk.named_parameters() if p.grad is not None}
    read = len(model.vision.trunk.blocks) - 2  # layer -2
    if unlocked:
        assert trained and all(name.startswith(f"blocks.{read}.") for name in trained)
        assert {name for name, p in model.vision.trunk.named_parameters() if p.requires_grad} == trained
        assert model.vision.training
    else:
        assert not trained and not model.vision.training  # frozen: no gradient, evaluation mode
    assert all(p.grad is not None for p in model.connector.parameters())


def test_greedy_answers_of_a_padded_batch_equal_one_by_one_decoding():
    model, tokenizer = tiny_vlm()
    model.eval()
    questions = ["what color is the square?", "how many circles are there?", "describe the image."]
    prompts = [prompt_ids(tokenizer, q, with_image=True) for q in questions]
    pixels = torch.randn(3, 3, 32, 32)
    length = max(map(len, prompts))
    ids = torch.tensor([[tokenizer.pad_token_id] * (length - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (length - len(p)) + [1] * len(p) for p in prompts])
    batched = model.generate(ids, mask, pixels, tokenizer.eos_token_id, max_new_tokens=5)
    for row, prompt in enumerate(prompts):
        alone = torch.tensor([prompt])
        embeds, _, _ = model.splice(alone, torch.ones_like(alone), pixels[row : row + 1])
        expected = []
        with torch.no_grad():
            for _ in range(5):
                token = model.language_model(inputs_embeds=embeds).logits[0, -1].argmax().item()
                if token == tokenizer.eos_token_id:
                    break
                expected.append(token)
                embeds = torch.cat([embeds, model.language_model.get_input_embeddings()(torch.tensor([[token]]))], dim=1)
        assert batched[row] == expected


def test_the_image_placeholder_is_required_once_and_refused_when_blind():
    model, tokenizer = tiny_vlm()
    ids = torch.tensor([prompt_ids(tokenizer, "what color is the square?", with_image=False)])
    with pytest.raises(ValueError, match="<image> token once"):
        model.splice(ids, torch.ones_like(ids), torch.randn(1, 3, 32, 32))
    blind, _ = tiny_vlm(blind=True)
    with_image = torch.tensor([prompt_ids(tokenizer, "what color is the square?", with_image=True)])
    with pytest.raises(ValueError, match="blind"):
        blind.splice(with_image, torch.ones_like(with_image), None)


def test_lora_trains_adapters_alone_and_starts_as_the_lm():
    model, tokenizer = tiny_vlm()
    ids, labels = encode_conversation(tokenizer, _conversation(("what color is the square?", "red")))
    ids, labels = torch.tensor([ids]), torch.tensor([labels])
    pixels = torch.randn(1, 3, 32, 32)
    before = model(ids, torch.ones_like(ids), labels, pixels).detach()
    base = {name: p.detach().clone() for name, p in model.language_model.named_parameters()}
    model.language_model = set_language_model_mode(model.language_model, "lora", lora_rank=4)
    torch.testing.assert_close(model(ids, torch.ones_like(ids), labels, pixels), before)  # LoRA's B starts at zero
    trained = {name for name, p in model.language_model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in name for name in trained)
    assert any("q_proj" in name for name in trained) and not any("lm_head" in name for name in trained)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):  # B moves first, then A: the output changes
        optimizer.zero_grad()
        model(ids, torch.ones_like(ids), labels, pixels).backward()
        optimizer.step()
    assert not torch.allclose(model(ids, torch.ones_like(ids), labels, pixels), before)
    for name, p in model.language_model.get_base_model().named_parameters():
        if "lora_" not in name:
            torch.testing.assert_close(p, base[name.replace(".base_layer", "")], msg=name)
    with pytest.raises(ValueError, match="stages.<stage>.lm='half'"):
        set_language_model_mode(model.language_model, "half")
