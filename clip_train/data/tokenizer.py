"""Tokenizers: any transformers tokenizer, or a byte-level BPE built offline from training captions.

The default needs no download: when `data.tokenizer` is unset, a BPE vocabulary is learnt
with the `tokenizers` library from the first captions of the training shards and cached
under a name derived from those shards, so every rank and every restart builds or finds the
same one. It lowercases, wraps each caption in `<|startoftext|> ... <|endoftext|>` (the text
tower pools at the end-of-text position) and pads on the right with `<|pad|>`.

`<|pad|>` is id 0 and the start and end of text are the two highest ids, as in OpenAI's CLIP
vocabulary (49406, 49407). transformers' `CLIPTextModel` pools at the end-of-text id its config
names, except that an id of 2 marks an old config and pools at the argmax of the ids instead; with
the end of text last, both rules find it, so an exported text tower pools where ours does.
"""

import hashlib
import itertools
import logging
import os
import tempfile
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from clip_train.cache_folder import write_folder_once

log = logging.getLogger(__name__)

START, END, PAD = "<|startoftext|>", "<|endoftext|>", "<|pad|>"
TEXT_IDS_LAST = "text-ids-last"  # in the cache key: tokenizers cached before this layout held the end of text at id 2


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """A transformers tokenizer from a local folder or hub name, padding on the right."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"data.tokenizer={name_or_path!r} is neither a local tokenizer folder nor a cached hub name "
            f"({error.__class__.__name__}: {error}). Leave data.tokenizer unset to build one from the captions."
        ) from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "right"
    return tokenizer


def train_caption_tokenizer(captions: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Learn a lowercase byte-level BPE of at most `vocab_size` tokens from `captions`."""
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 2,  # the start and end of text are added after the merges, as the last two ids
        special_tokens=[PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(captions, trainer=trainer)
    bpe.add_special_tokens([START, END])
    bpe.post_processor = processors.TemplateProcessing(
        single=f"{START} $A {END}", special_tokens=[(START, bpe.token_to_id(START)), (END, bpe.token_to_id(END))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=START, eos_token=END, pad_token=PAD, padding_side="right")


def cached_caption_tokenizer(
    captions: Iterable[str], source_id: str, cache_dir: str, vocab_size: int, max_captions: int
) -> str:
    """Folder of the tokenizer learnt from the first `max_captions` of `captions`; built once per `source_id`."""
    digest = hashlib.sha1(f"{source_id}|{vocab_size}|{max_captions}|{TEXT_IDS_LAST}".encode()).hexdigest()[:16]
    folder = os.path.join(cache_dir, "tokenizers", f"bpe-{vocab_size}-{digest}")
    if os.path.isdir(folder):
        return folder
    log.info("Learning a %d-token BPE tokenizer from up to %d training captions", vocab_size, max_captions)
    tokenizer = train_caption_tokenizer(itertools.islice(captions, max_captions), vocab_size)
    return write_folder_once(folder, tokenizer.save_pretrained)  # racing ranks learn the same tokenizer


def tokenizer_files(tokenizer: PreTrainedTokenizerBase) -> dict[str, str]:
    """The tokenizer as {file name: text}, to travel inside a checkpoint and be rebuilt anywhere."""
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        files = {}
        for name in sorted(os.listdir(folder)):
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                files[name] = f.read()
        return files


def tokenizer_from_files(files: dict[str, str]) -> PreTrainedTokenizerBase:
    """Inverse of `tokenizer_files`."""
    with tempfile.TemporaryDirectory() as folder:
        for name, text in files.items():
            with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
                f.write(text)
        return load_tokenizer(folder)


def start_and_end_ids(tokenizer) -> tuple[int, int]:
    """The ids that open and close a caption: BOS/EOS, or CLS/SEP for BERT-style tokenizers."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if start is None or end is None:
        raise ValueError(f"{type(tokenizer).__name__} has no start and end tokens to caption with (bos/eos or cls/sep)")
    return start, end


class Tokenize:
    """Captions -> {input_ids, attention_mask}, each (B, context_length) long, right-padded."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, context_length: int):
        self.tokenizer, self.context_length = tokenizer, context_length

    def __call__(self, captions: list[str]) -> dict:
        tokens = self.tokenizer(
            captions,
            padding="max_length",
            truncation=True,
            max_length=self.context_length,
            return_tensors="pt",
            return_attention_mask=True,  # also from a tokenizer that leaves it out (SigLIP's: its model reads no mask)
        )
        return {"input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}
