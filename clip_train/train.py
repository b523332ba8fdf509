"""Training: build every component from the config, fit, validate, write metrics.json.

    python -m clip_train                                   # embedded default, this machine
    python -m clip_train debug=fast                        # seconds-long smoke run
    python -m clip_train data.train_shards='/data/cc3m/{00000..00331}.tar' \
        data.val_shards='/data/cc3m_val/{00000..00003}.tar' model=vit_b16 trainer=ddp trainer.devices=8
"""

import glob
import json
import logging
import os

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import DictConfig, OmegaConf

from clip_train.build import build_datamodule, model_build_config
from clip_train.checkpoint_file import check_resumable, read_checkpoint
from clip_train.config import check_config
from clip_train.data.bad_data import bad_sample_metrics
from clip_train.data.tokenizer import tokenizer_files
from clip_train.distributed import all_reduce_sum
from clip_train.eval.drawn_tasks import drop_drawn_tasks, trains_on_embedded_scenes
from clip_train.eval.zeroshot_sets import add_zeroshot_sets
from clip_train.interop.warm_start import load_pretrained_weights, start_from_pretrained
from clip_train.model.compiling import compile_model
from clip_train.model.lora import trainable_parameter_report
from clip_train.model.weight_sources import architecture_config, without_weight_sources
from clip_train.recipe import Recipe
from clip_train.training.checkpointing import AtomicCheckpointIO
from clip_train.training.console_logging import print_each_line_once
from clip_train.training.module import ClipModule
from clip_train.training.preemption import Preempted
from clip_train.training.teacher import attach_teachers

log = logging.getLogger(__name__)


def resume_path(ckpt_path: str | None, output_dir: str) -> str | None:
    """`last`: the newest checkpoint of this run directory, the periodic `checkpoints/last.ckpt` or the
    `hpc_ckpt_N.ckpt` Lightning saves when SLURM signals a requeue; None (a fresh start) if there is none."""
    if ckpt_path != "last":
        return ckpt_path
    candidates = glob.glob(os.path.join(output_dir, "hpc_ckpt_*.ckpt")) + glob.glob(
        os.path.join(output_dir, "checkpoints", "last.ckpt")
    )
    return max(candidates, key=os.path.getmtime, default=None)


def requeue_plugins() -> list:
    """Exactly one component owns SLURM requeue. Under submitit (hydra/launcher=slurm) it is submitit,
    so Lightning's own SIGUSR1 auto-requeue is turned off; elsewhere (sbatch + srun) Lightning owns it."""
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
        return [SLURMEnvironment(auto_requeue=False)]
    return []


def _strategy(strategy):
    """`trainer.strategy=ddp` as DDP without per-forward buffer broadcasts.

    Validation ranks run as many batches as their shards hold, which may differ; a buffer
    broadcast in every forward would leave the rank with more batches waiting forever.
    """
    if strategy == "ddp":
        return DDPStrategy(broadcast_buffers=False)
    return instantiate(strategy) if isinstance(strategy, DictConfig) else strategy


def _resumed_architecture(model_cfg: DictConfig, checkpoint_path: str) -> DictConfig:
    """`model_cfg` for a resumed run: the checkpoint holds every weight, so no tower reads a pretrained source
    (a LiT trunk's file or a transformers folder may be gone); a transformers text tower takes the config the
    checkpoint's recipe carries (`clip_train.model.weight_sources`)."""
    architecture = without_weight_sources(OmegaConf.to_container(model_cfg))
    recipe = Recipe.from_checkpoint(read_checkpoint(checkpoint_path, "ckpt_path"))
    saved = recipe.model.get("text_tower", {}) if recipe is not None else {}
    if "transformers_config" in saved and architecture["text_tower"].get("_target_") == saved.get("_target_"):
        architecture["text_tower"]["transformers_config"] = saved["transformers_config"]
    return OmegaConf.create(architecture)


def _final_metrics(trainer: L.Trainer, module: ClipModule, datamodule) -> dict[str, float]:
    """The last logged values, with validation re-run if the last one predates the final step."""
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if datamodule.val_urls and module.last_validated_step != trainer.global_step:
        for results in trainer.validate(module, datamodule=datamodule, verbose=False):  # none when limited to 0
            metrics |= {k: float(v) for k, v in results.items()}
    metrics["train/samples_seen"] = float(module.samples_seen)
    metrics["train/skipped_steps"] = float(module.bad_steps.skipped)
    bad_samples = all_reduce_sum(module.bad_samples.to(module.device))
    metrics |= {name: float(count) for name, count in bad_sample_metrics(bad_samples).items()}
    return dict(sorted(metrics.items()))


def run(cfg: DictConfig) -> dict[str, float]:
    """Train as `cfg` says; returns the final metrics, also written to `<run dir>/metrics.json`."""
    print_each_line_once()
    cfg, pretrained = start_from_pretrained(cfg)  # model.init_from: a new config, the source's architecture and tokenizer
    check_config(cfg)  # on the config that will be built
    if cfg.get("eval"):
        add_zeroshot_sets(cfg.eval)
    if not trains_on_embedded_scenes(cfg.data) and cfg.get("eval") and cfg.eval.get("tasks"):
        dropped = drop_drawn_tasks(cfg.eval.tasks)
        if dropped:
            log.info("training on your shards: the drawn-scene evaluation tasks are off (%s)", ", ".join(dropped))
    torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    L.seed_everything(cfg.seed, workers=True)  # alike on every rank, so is the model; ClipModule.on_fit_start adds the rank
    loss = instantiate(cfg.loss)
    datamodule = build_datamodule(cfg, loss)  # with the model's image size and context length, the loss's k
    model_cfg = model_build_config(cfg.model, datamodule.tokenizer, from_source=pretrained is not None)
    resume = resume_path(cfg.ckpt_path, cfg.paths.output_dir)
    if resume is not None:
        check_resumable(resume, OmegaConf.to_container(model_cfg))
        model_cfg = _resumed_architecture(model_cfg, resume)
    model = instantiate(model_cfg)
    if pretrained is not None:
        load_pretrained_weights(model, pretrained)
    if cfg.compile:  # in place, so parameter names (and checkpoints) stay those of the eager model
        compile_model(model)
    recipe = Recipe(
        model=architecture_config(OmegaConf.to_container(model_cfg), model),  # rebuilds without weight sources
        image_mean=datamodule.image_mean,
        image_std=datamodule.image_std,
        image_resize=datamodule.image_resize,
        tokenizer_source=datamodule.tokenizer_source,
        tokenizer_files=tokenizer_files(datamodule.tokenizer),  # the checkpoint carries its own tokenizer
    )
    attach_teachers(
        loss, datamodule.tokenizer, model.image_size, model.context_length, datamodule.image_mean, datamodule.image_std
    )
    module = ClipModule(
        model=model,
        loss=loss,
        optimizer=instantiate(cfg.optim.optimizer),
        scheduler=instantiate(cfg.optim.scheduler),
        accumulate=cfg.optim.accumulate,
        gradient_clip_norm=cfg.optim.gradient_clip_norm,
        recipe=recipe,
        max_consecutive_bad_steps=cfg.optim.max_consecutive_bad_steps,
        temperature_lr_scale=cfg.optim.temperature_lr_scale,
        layer_decay=cfg.optim.get("layer_decay"),
        ema_decay=(cfg.optim.get("ema") or {}).get("decay"),
    )
    log.info(trainable_parameter_report(module.model))
    callbacks = [instantiate(c) for c in cfg.callbacks.values()] if cfg.get("callbacks") else []
    loggers = [instantiate(c) for c in cfg.logger.values()] if cfg.get("logger") else False
    callbacks += [logger for logger in loggers or [] if isinstance(logger, L.Callback)]  # ResumableCSVLogger
    trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers,
        strategy=_strategy(cfg.trainer.strategy),
        plugins=[AtomicCheckpointIO(), *requeue_plugins()],
    )
    output_dir = cfg.paths.output_dir
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    except Preempted as preempted:  # the checkpoint is written; exit as a signalled process would
        raise SystemExit(128 + preempted.signum) from preempted
    metrics = _final_metrics(trainer, module, datamodule)
    if trainer.is_global_zero:
        with open(os.path.join(output_dir, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)
        print(json.dumps(metrics, indent=2))
    return metrics
