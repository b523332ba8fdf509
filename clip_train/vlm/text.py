"""The VLM's words: a word-level tokenizer learnt offline, and conversations as token ids with answer-only labels.

Nothing downloads, so the default language model starts from scratch on a vocabulary of the conversations'
own words (the `tokenizers` library's WordLevel model: lower case, words and punctuation apart), plus
`<image>` and Florence-2's 1000 location tokens as whole tokens. A conversation becomes

    <s> user : <image> q1 assistant : a1 </s> user : q2 assistant : a2 </s> ...

and its labels are the ids of every `a_i </s>` and -100 everywhere else, so the loss covers the answers only
(LLaVA's masking). The `<image>` id is where the model splices in the image tokens.
"""

from collections.abc import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from clip_train.vlm.conversations import IMAGE, Conversation
from clip_train.vlm.questions import LOCATION_BINS

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
IGNORE = -100  # the label of a token the loss skips, as torch's cross_entropy and transformers take it
USER, ASSISTANT = "user:", "assistant:"


def location_token_names() -> list[str]:
    return [f"<loc_{i}>" for i in range(LOCATION_BINS)]


def build_word_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """A WordLevel tokenizer over the words of `texts` (and of the prompt), with the specials and location tokens."""
    pre_tokenizer = pre_tokenizers.Whitespace()
    normalizer = normalizers.Lowercase()
    words = set(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(f"{USER} {ASSISTANT}")))
    for text in texts:
        words.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text.replace(IMAGE, " "))))
    specials = [PAD, UNK, BOS, EOS, IMAGE, *location_token_names()]
    vocab = {token: index for index, token in enumerate(specials + sorted(words - set(specials)))}
    words_model = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    words_model.normalizer, words_model.pre_tokenizer = normalizer, pre_tokenizer
    words_model.add_special_tokens(specials)
    return PreTrainedTokenizerFast(
        tokenizer_object=words_model, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK, padding_side="right"
    )


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def prompt_ids(tokenizer: PreTrainedTokenizerBase, question: str, with_image: bool, first: bool = True) -> list[int]:
    """The ids of one human turn, up to and including "assistant:"; the first one opens with <s> (and <image>)."""
    image = f"{IMAGE} " if with_image and first else ""
    opening = [tokenizer.bos_token_id] if first else []
    return opening + _ids(tokenizer, f"{USER} {image}{question} {ASSISTANT}")


def encode_conversation(
    tokenizer: PreTrainedTokenizerBase, conversation: Conversation, with_image: bool = True
) -> tuple[list[int], list[int]]:
    """(input ids, labels) of a whole conversation: labels are the ids of each answer and its </s>, else IGNORE.
    Without the image (the blind baseline) the <image> token is left out."""
    ids, labels = [], []
    for number, turn in enumerate(conversation.turns):
        prompt = prompt_ids(tokenizer, turn.question, with_image, first=number == 0)
        answer = _ids(tokenizer, turn.answer) + [tokenizer.eos_token_id]
        ids += prompt + answer
        labels += [IGNORE] * len(prompt) + answer
    return ids, labels
