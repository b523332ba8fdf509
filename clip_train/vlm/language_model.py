"""The language model and its tokenizer: a local transformers causal LM, or a tiny one built from a config.

With `lm` unset nothing downloads: the tokenizer is a word-level one learnt from the training conversations
(`clip_train.vlm.text`) and the LM a small transformers config (`lm_config`, e.g. a LlamaConfig) with that
vocabulary, trained from scratch. With `lm=FOLDER` the folder's tokenizer and weights are used, `<image>` and
the location tokens added to the tokenizer and the embeddings grown to fit.
"""

from collections.abc import Iterable

from hydra.utils import instantiate
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from clip_train.data.tokenizer import load_tokenizer
from clip_train.vlm.conversations import IMAGE
from clip_train.vlm.text import build_word_tokenizer, location_token_names

MODES = ("full", "frozen", "lora")


def build_language_model(
    lm: str | None, lm_config, texts: Iterable[str], tokenizer: PreTrainedTokenizerBase | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(causal LM, tokenizer): from the folder `lm`, or from `lm_config` (a Hydra node of a transformers config)
    over `tokenizer` (a stage checkpoint's) or else a word tokenizer of `texts`."""
    if lm is None:
        tokenizer = build_word_tokenizer(texts) if tokenizer is None else tokenizer
        config = instantiate(lm_config, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
        return AutoModelForCausalLM.from_config(config), tokenizer
    try:
        model = AutoModelForCausalLM.from_pretrained(lm)
    except (OSError, ValueError) as error:
        raise ValueError(f"lm={lm!r} is not a local transformers causal LM folder ({type(error).__name__}: {error})") from error
    try:
        tokenizer = load_tokenizer(lm)
    except ValueError as error:
        raise ValueError(f"lm={lm!r}: no tokenizer in the folder ({error})") from error
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE, *location_token_names()]})
    if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError(f"lm={lm!r}: its tokenizer has no bos/eos tokens to open and close a turn with")
    model.resize_token_embeddings(len(tokenizer))
    return model, tokenizer


def set_language_model_mode(model: nn.Module, mode: str, lora_rank: int = 8) -> nn.Module:
    """The LM to train in a stage: `full` trains every weight, `frozen` none (LLaVA's align stage), `lora` adds
    `peft` LoRA adapters of rank `lora_rank` to every linear layer and trains those alone (their B starts at
    zero, so the adapted LM starts out answering exactly as the LM). An LM adapted already keeps its adapters."""
    if mode not in MODES:
        raise ValueError(f"stages.<stage>.lm={mode!r}: choose one of {list(MODES)}")
    if mode == "lora":
        if not isinstance(model, PeftModel):
            model = get_peft_model(model, LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, target_modules="all-linear"))
        for name, parameter in model.named_parameters():
            parameter.requires_grad_("lora_" in name)
        return model
    model.requires_grad_(mode == "full")
    return model
