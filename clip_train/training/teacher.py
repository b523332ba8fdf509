"""A distillation teacher from any source clip_train reads, checked against the student's inputs, placed beside it.

Sources: a clip_train checkpoint (`.ckpt` file or sharded folder) or export folder, read by `clip_train.load`
(a LoRA checkpoint's adapters included); anything else goes to `model.init_from`'s reader (a transformers
CLIPModel folder, an OpenCLIP file or folder, a hub id or OpenCLIP `ARCH/TAG` in the local cache).

The teacher reads the student's batches, so it must take the same images and token ids. Images of another
normalisation are mapped to the teacher's exactly (an affine map per channel); another image size, another
tokenizer, or a shorter context are refused, naming the setting to change. A source without its own
normalisation (an init_from source) is taken to use the data's.
"""

import os

import torch
from hydra.utils import instantiate
from transformers import PreTrainedTokenizerBase

from clip_train.checkpoint_file import is_sharded_checkpoint, read_checkpoint
from clip_train.data.tokenizer import load_tokenizer
from clip_train.inference import load
from clip_train.interop.reader import init_from
from clip_train.interop.warm_start import load_pretrained_weights
from clip_train.objectives.distillation import Distillation, Teacher
from clip_train.recipe import Recipe

OPTION = "loss.terms.distill_loss.teacher"


def is_clip_train_model(path: str) -> bool:
    """Whether `path` is a clip_train export folder, sharded checkpoint folder, or checkpoint file with a recipe."""
    if os.path.isdir(path):
        return is_sharded_checkpoint(path) or Recipe.read(path) is not None
    if not os.path.isfile(path):
        return False
    try:
        return Recipe.from_checkpoint(read_checkpoint(path, OPTION)) is not None
    except ValueError:  # not a torch file (safetensors and the like): another reader's
        return False


def load_teacher(source: str) -> tuple[torch.nn.Module, PreTrainedTokenizerBase | None, tuple | None, tuple | None]:
    """(model, tokenizer or None, image mean or None, image std or None) of the teacher at `source`, on the CPU."""
    path = os.path.expanduser(source)
    if is_clip_train_model(path):
        teacher = load(path)
        return teacher.network, teacher.tokenizer, tuple(teacher.recipe.image_mean), tuple(teacher.recipe.image_std)
    pretrained = init_from(path)
    model = instantiate(pretrained.model_config)
    load_pretrained_weights(model, pretrained)
    tokenizer = load_tokenizer(pretrained.tokenizer) if pretrained.tokenizer is not None else None
    return model, tokenizer, None, None


def _pixel_map(data_mean, data_std, mean, std) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(scale, shift), each (1, 3, 1, 1), taking pixels normalised by the data's mean and std to the teacher's; (None,
    None) when they are the same. x_t = (x_s · std_s + mean_s − mean_t) / std_t."""
    if mean is None or (tuple(mean) == tuple(data_mean) and tuple(std) == tuple(data_std)):
        return None, None
    data_mean, data_std, mean, std = (torch.tensor(v).float().view(1, 3, 1, 1) for v in (data_mean, data_std, mean, std))
    return data_std / std, (data_mean - mean) / std


def _check_inputs(source: str, model, tokenizer, data_tokenizer, image_size: int, context_length: int) -> None:
    if model.image_size != image_size:
        raise ValueError(
            f"{OPTION}={source} takes {model.image_size}-px images but the student's batches are {image_size} px: "
            f"train the student at model.image_size={model.image_size}, or pick another teacher"
        )
    if model.context_length < context_length:
        raise ValueError(
            f"{OPTION}={source} reads {model.context_length} tokens but the student's captions are {context_length}: "
            f"set model.context_length to at most {model.context_length}"
        )
    if tokenizer is not None and tokenizer.get_vocab() != data_tokenizer.get_vocab():
        raise ValueError(
            f"{OPTION}={source} was trained with another tokenizer than data.tokenizer, so the token ids would mean "
            "other words to it: set data.tokenizer to the teacher's (an export folder holds its tokenizer: "
            "python -m clip_train.export checkpoint=TEACHER out=DIR, then data.tokenizer=DIR)"
        )


def attach_teachers(
    objective: torch.nn.Module,
    data_tokenizer: PreTrainedTokenizerBase,
    image_size: int,
    context_length: int,
    image_mean,
    image_std,
) -> int:
    """Load the teacher of every `Distillation` term of `objective`, check it against the student's inputs, and hand
    it to the term; returns how many were attached."""
    terms = [term for term in objective.modules() if isinstance(term, Distillation)]
    for term in terms:
        model, tokenizer, mean, std = load_teacher(term.source)
        _check_inputs(term.source, model, tokenizer, data_tokenizer, image_size, context_length)
        term.teacher = Teacher(model, *_pixel_map(image_mean, image_std, mean, std))
    return len(terms)
