"""Training from a published CLIP: what `model.init_from` changes in a run.

    python -m clip_train model=clip_pretrained model.init_from=PATH [model.image_tower.lock=true ...]

Before anything is built (and checked), a new run config is made, the user's left as typed: the
source's model config replaces its `model` node, with the user's remaining `model.*` keys (locking,
patch dropout, checkpointing, a loss's logit bias) merged on top, and its tokenizer becomes
`data.tokenizer` when that is unset, so text ids mean what the weights learnt (a source without one
needs `data.tokenizer` set). So does its image preprocessing (`data.image_mean`, `data.image_std`,
`data.image_resize`), each where the user left it unset (null). After the model is built, every
source weight is loaded, strictly. The run's recipe then holds the resolved config, not the path:
its checkpoints rebuild without the source.
"""

import copy

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from transformers import PreTrainedTokenizerBase

from clip_train.interop.pretrained import PretrainedCLIP
from clip_train.interop.reader import init_from
from clip_train.model.checkpoint_keys import match_model_state
from clip_train.model.lora import is_adapter_key, plain_to_adapted_keys

# Parameters a user option adds that no CLIP source has: they start from their init value.
ADDED_BY_OPTIONS = {"logit_bias"}  # model.init_logit_bias, set by loss=siglip


def start_from_pretrained(cfg: DictConfig) -> tuple[DictConfig, PretrainedCLIP | None]:
    """The run's config as it will be built from the source `model.init_from` names: a new config whose `model` is
    the source's (with the user's other `model.*` keys on top) and whose unset `data.tokenizer` and preprocessing
    are the source's; `cfg` is untouched.

    Returns (that config, the source), whose weights `load_pretrained_weights` puts in the built model; (`cfg`,
    None) when `model.init_from` is not set.
    """
    source = cfg.model.get("init_from")
    if source is None:
        return cfg, None
    if "_target_" in cfg.model:
        raise ValueError(
            f"model.init_from={source} takes the architecture from the source: use model=clip_pretrained "
            f"model.init_from={source}, not a preset that defines its own ({cfg.model._target_})"
        )
    pretrained = init_from(source)
    options = OmegaConf.masked_copy(cfg.model, [key for key in cfg.model if key != "init_from"])
    if cfg.data.get("tokenizer") is None and pretrained.tokenizer is None:
        raise ValueError(
            f"model.init_from={source} carries no tokenizer and data.tokenizer is unset: a tokenizer learnt from "
            "your captions would feed its text weights unrelated ids. Set data.tokenizer to the one it was trained "
            "with (OpenAI's vocabulary: a hub-cache folder of openai/clip-vit-base-patch32)"
        )
    built = copy.deepcopy(cfg)
    with open_dict(built):
        built.model = OmegaConf.merge(pretrained.model_config, options)
        built.data.tokenizer = cfg.data.get("tokenizer") or pretrained.tokenizer
        for key, value in pretrained.preprocessing.items():
            if cfg.data.get(key) is None:
                built.data[key] = value
    return built, pretrained


def check_tokenizer_fits(vocab_size: int, tokenizer: PreTrainedTokenizerBase) -> None:
    """A source's token table is fixed by its weights: the tokenizer's ids must all index it."""
    if len(tokenizer) > vocab_size:
        raise ValueError(
            f"data.tokenizer has {len(tokenizer)} tokens but the model.init_from text tower embeds only "
            f"{vocab_size}; leave data.tokenizer unset to use the source's tokenizer"
        )


def load_pretrained_weights(model: torch.nn.Module, pretrained: PretrainedCLIP) -> None:
    """Put every source weight in `model`; a weight missing on either side is an error naming it. Under LoRA
    (`clip_train.model.lora`) the source's layers are the adapted layers' base, and the adapters start as theirs."""
    model_state = model.state_dict()
    state = plain_to_adapted_keys(match_model_state(pretrained.state_dict, model_state), model_state)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [key for key in missing if key not in ADDED_BY_OPTIONS and not is_adapter_key(key)]
    if unexpected == ["logit_bias"]:
        raise ValueError(
            "model.init_from has a logit_bias (a SigLIP, trained with a sigmoid loss) but the model built has none: "
            "train it with loss=siglip, which reads it, and leave model.init_logit_bias unset"
        )
    if missing or unexpected:
        raise ValueError(
            f"model.init_from weights do not fit the model built from its config: "
            f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
