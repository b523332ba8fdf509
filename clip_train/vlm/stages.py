"""One training stage: which parts train, on which conversations, for how long, with Lightning's Trainer.

LLaVA trains in two stages: `align` fits the connector alone on captions (the LM frozen), `instruct` tunes the
connector and the LM on questions. Each stage writes `<run dir>/<stage>/checkpoints/last.ckpt`, and a stage
whose checkpoint is there resumes from it (optimizer, schedule and step restored by Lightning) instead of
starting again; a finished stage is not trained further.
"""

import os

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from clip_train.data.bad_data import BAD_KINDS, BadDataPolicy
from clip_train.data.tokenizer import tokenizer_files
from clip_train.training.csv_log import ResumableCSVLogger
from clip_train.vlm.conversation_source import ConversationSource
from clip_train.vlm.data import ConversationDataModule
from clip_train.vlm.language_model import set_language_model_mode
from clip_train.vlm.model import VisionLanguageModel
from clip_train.vlm.module import VisionLanguageModule

TOKENIZER_KEY = "vlm_tokenizer"  # the tokenizer's files inside a stage checkpoint
RECIPE_KEY = "vlm_recipe"  # what rebuilds the model: vision settings, lm, lm_config, connector, lora_rank


class SaveRecipe(L.Callback):
    """Puts the tokenizer's files and the model's recipe into every checkpoint, so a later stage (`init_from`)
    reads the same vocabulary and `clip_train.load_vlm` rebuilds the model."""

    def __init__(self, tokenizer, recipe: dict):
        self.files, self.recipe = tokenizer_files(tokenizer), recipe

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[TOKENIZER_KEY], checkpoint[RECIPE_KEY] = self.files, self.recipe


def train_stage(
    name: str,
    model: VisionLanguageModel,
    tokenizer,
    source: ConversationSource,
    preprocess,
    settings,
    trainer_settings: dict,
    run_dir: str,
    batch_size: int,
    num_workers: int,
    seed: int = 0,
    callbacks: tuple = (),
    recipe: dict | None = None,
    shuffle_buffer: int = 1000,
    bad_data: BadDataPolicy | None = None,
) -> dict[str, int]:
    """Train `model` in place for `settings.steps` optimizer steps of `settings` (lm mode full|frozen|lora, lr,
    warmup_steps, weight_decay) on `batch_size` conversations of `source` per rank and step, in the order of `seed`
    (`clip_train.vlm.conversation_stream`), and return the records skipped by kind over all ranks (the kinds with
    any). `trainer_settings` pass to lightning.Trainer (devices, strategy, precision, accumulate_grad_batches, ...),
    and `callbacks` are added to the stage's checkpointing; `recipe` goes into the checkpoints (`SaveRecipe`)."""
    model.language_model = set_language_model_mode(model.language_model, settings.lm, settings.lora_rank)
    if model.connector is not None:
        model.connector.requires_grad_(True)
    folder = os.path.join(run_dir, name)
    last = os.path.join(folder, "checkpoints", "last.ckpt")
    preprocess = None if model.blind else preprocess
    data = ConversationDataModule(source, tokenizer, preprocess, batch_size, num_workers, seed, shuffle_buffer, bad_data)
    stage_recipe = {"blind": model.blind, "lm_mode": settings.lm, "lora_rank": settings.lora_rank}
    module = VisionLanguageModule(model, settings.lr, settings.weight_decay, settings.warmup_steps, settings.steps)
    saves = ModelCheckpoint(os.path.join(folder, "checkpoints"), save_last=True, save_top_k=0,
                            every_n_train_steps=settings.checkpoint_every_n_steps or settings.steps)  # fmt: skip
    csv_log = ResumableCSVLogger(folder, name="csv", version="")  # a resumed stage keeps its earlier rows
    trainer = L.Trainer(
        **trainer_settings, max_steps=settings.steps, default_root_dir=folder,
        callbacks=[saves, SaveRecipe(tokenizer, {**(recipe or {}), **stage_recipe}), csv_log, *callbacks],
        logger=csv_log,
        enable_model_summary=False, num_sanity_val_steps=0, use_distributed_sampler=False,
    )  # fmt: skip
    trainer.fit(module, datamodule=data, ckpt_path=last if os.path.isfile(last) else None)
    return {kind: n for kind, n in zip(BAD_KINDS, module.bad_sample_totals.tolist()) if n}
