"""What one config group hands another when the run is built.

Each group reads only its own keys (and `paths`/`seed`); a value two groups need has one owner, and the
code that builds the other passes it as an argument:

- the model owns `image_size` and `context_length`: the data module receives them (data.image_size or
  data.context_length set to a number overrides, as before);
- the loss owns how many text hard negatives it scores: the data module receives that count, read from
  the built objective whatever its layout (a plain InfoNCE/SigLip or a WeightedSum's term);
- the data module owns the tokenizer: the model's text tower receives its vocabulary size and its
  end/pad token ids, in a new model config (the one the recipe records), never in the run's config.
"""

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from transformers import PreTrainedTokenizerBase

from clip_train.interop.warm_start import check_tokenizer_fits

FROM_THE_MODEL = ("image_size", "context_length")  # data keys that follow the model's when null


def hard_negatives_scored(loss: nn.Module) -> int:
    """k, the text hard negatives per caption `loss` (or any of its terms) scores; 0 when none does.

    Two terms asking for different k > 0 is an error: one data stream cannot feed both.
    """
    counts = {module.text_hard_negatives for module in loss.modules() if getattr(module, "text_hard_negatives", 0)}
    if len(counts) > 1:
        raise ValueError(f"the loss's terms ask for different text_hard_negatives {sorted(counts)}: use one k")
    return counts.pop() if counts else 0


def data_arguments(data_cfg: DictConfig, model_cfg: DictConfig, loss: nn.Module) -> dict:
    """The data module's arguments another group owns: {image_size, context_length, text_hard_negatives},
    each only where `data_cfg` leaves it null."""
    owned = {key: model_cfg[key] for key in FROM_THE_MODEL}
    owned["text_hard_negatives"] = hard_negatives_scored(loss)
    return {key: value for key, value in owned.items() if data_cfg.get(key) is None}


def data_build_config(cfg: DictConfig, loss: nn.Module | None = None) -> DictConfig:
    """A new, resolved `cfg.data` with what the model and the loss hand it; `loss` is `cfg.loss` built, when the
    caller has it (else it is built here)."""
    loss = instantiate(cfg.loss) if loss is None else loss
    resolved = OmegaConf.create(OmegaConf.to_container(cfg.data, resolve=True, throw_on_missing=False))
    return OmegaConf.merge(resolved, data_arguments(cfg.data, cfg.model, loss))


def build_datamodule(cfg: DictConfig, loss: nn.Module | None = None):
    """The data module `cfg` describes (`data_build_config`)."""
    return instantiate(data_build_config(cfg, loss))


def text_tower_arguments(text_tower_cfg: DictConfig, tokenizer: PreTrainedTokenizerBase, from_source: bool) -> dict:
    """What the tokenizer hands the text tower: its vocabulary size (unless the token table is a `model.init_from`
    source's, which the tokenizer must fit) and its end and pad ids, for the towers that take them (a pad id only
    where the tower leaves it null)."""
    arguments = {}
    if from_source:
        check_tokenizer_fits(text_tower_cfg.vocab_size, tokenizer)
    else:
        arguments["vocab_size"] = len(tokenizer)
    if "eos_token_id" in text_tower_cfg:
        arguments["eos_token_id"] = tokenizer.eos_token_id
    if "pad_token_id" in text_tower_cfg and text_tower_cfg.pad_token_id is None:
        arguments["pad_token_id"] = tokenizer.pad_token_id
    return arguments


def model_build_config(model_cfg: DictConfig, tokenizer: PreTrainedTokenizerBase, from_source: bool) -> DictConfig:
    """A new, resolved model config: `model_cfg` with the text tower's tokenizer arguments; `model_cfg` is untouched."""
    resolved = OmegaConf.create(OmegaConf.to_container(model_cfg, resolve=True, throw_on_missing=False))
    return OmegaConf.merge(resolved, {"text_tower": text_tower_arguments(resolved.text_tower, tokenizer, from_source)})
