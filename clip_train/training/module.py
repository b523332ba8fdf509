"""The LightningModule: one contrastive step, optimizer groups, schedule and validation metrics.

Optimization is manual: one training step is one optimizer step over the whole per-device
batch, split into `accumulate` micro-batches with exact gradients (`clip_train.training.accumulation`),
then gradient clipping, the optimizer and schedule steps, and the temperature clamp.

Per training step it logs `train/loss` (this rank's share of the global-batch loss, averaged over ranks),
`train/logit_scale`, every other named term of the objective as `train/<name>`, `lr`, `train/grad_norm`
(before clipping), the counters and `data/bad_samples[/<kind>]` (running totals, summed over ranks); the
table of every key and its meaning is in docs/training.md.

Validation embeds each batch of this rank's share of the validation set and hands the embeddings to the
validation tasks (`validation_step`'s output; `clip_train.eval.callback.EvaluationCallback` runs them):
retrieval over the union of all ranks, whose `val/loss` is the symmetric InfoNCE at the model's temperature
whatever the training loss (for SigLIP too), so it compares runs by ranking quality, not by their
training objective.

Under `precision=16-mixed` the step clips the true (unscaled) gradient and lets the loss scaler
back off on overflow (`_clip_gradients`, `clip_train.training.numerics`); Lightning's own manual-optimization
recipe clips the scaled gradient (Lightning issue #18089).

The step waits for the device once, for the verdict on skipping it (`clip_train.training.numerics`),
which also brings the rank-averaged loss to the host; the gradient norm is summed once, for that
verdict, and reused by clipping and the log. Lightning turns a logged Python number into a
tensor on the module's device, a host-to-device copy that on CUDA waits for the queued work, and
reads every progress-bar value back with `.item()` after each batch: so numbers known on the
host (the loss, lr, counters) are logged as CPU tensors, and device tensors (logit scale, grad
norm, loss parts) stay off the progress bar and are read only when Lightning writes the logs
(every `trainer.log_every_n_steps`).
"""

from collections.abc import Callable
from contextlib import ExitStack, nullcontext

import lightning as L
import torch

from clip_train.data.bad_data import BAD_KINDS, bad_sample_metrics
from clip_train.distributed import all_reduce_sum
from clip_train.model import DualEncoder
from clip_train.model.checkpoint_keys import fit_0d_optimizer_moments, match_model_state
from clip_train.objectives import Objective, check_objective
from clip_train.objectives.distillation import teachers
from clip_train.recipe import Recipe
from clip_train.training.accumulation import contrastive_backward
from clip_train.training.ema import CHECKPOINT_KEY as EMA_KEY
from clip_train.training.ema import WeightAverage
from clip_train.training.fsdp import whole
from clip_train.training.numerics import BadStepGuard, clip_to_norm_, local_grads, step_verdict
from clip_train.training.optim import parameter_groups, scale_learning_rates
from clip_train.training.rng_state import every_rank_rng_states, rank_rng_states, seed_rank, set_rng_states
from clip_train.training.training_length import total_optimizer_steps


class ClipModule(L.LightningModule):
    """Trains a `DualEncoder` (or `CoCa`) with an objective from `clip_train.objectives`.

    loss: the objective (config group `loss`), checked against the model here (`check_objective`).
        A model's `logit_scale` that the objective does not read (alignment + uniformity) is frozen:
        it would otherwise be a parameter without gradient, which DDP refuses.

    optimizer: a partial (Hydra `_partial_: true`) taking `params`; its `weight_decay`
        applies to the decayed group only (see `clip_train.training.optim`).
    scheduler: a partial taking `(optimizer, total_steps=...)`, stepped every optimizer step.
    accumulate: micro-batches per optimizer step (the batch is split; negatives are kept).
    gradient_clip_norm: clip the global gradient L2 norm to this; None for no clipping.
    max_consecutive_bad_steps: a step whose loss or gradients are not finite (on any rank) is
        skipped; this many in a row stop the run (`clip_train.training.numerics`); None: never stop.
    recipe: what is needed to rebuild the model from a checkpoint (model config, tokenizer,
        image preprocessing); stored in the checkpoint's hyper-parameters as plain data
        (`clip_train.recipe`), and kept as `self.recipe`.
    temperature_lr_scale: the learning rate of `logit_scale` and `logit_bias` as a multiple of the optimizer's
        (`clip_train.training.optim.parameter_groups`).
    layer_decay: layer-wise learning-rate decay of both towers (`clip_train.training.layer_decay`); None: off.
    ema_decay: keep an EMA of the weights at this decay (`clip_train.training.ema`), which validation, the
        evaluation tasks, checkpoints' `ema_state_dict` and so `clip_train.load` and export use; None: off.
    """

    def __init__(
        self,
        model: DualEncoder,
        loss: Objective,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler],
        accumulate: int = 1,
        gradient_clip_norm: float | None = 1.0,
        recipe: Recipe | None = None,
        max_consecutive_bad_steps: int | None = 5,
        temperature_lr_scale: float = 1.0,
        layer_decay: float | None = None,
        ema_decay: float | None = None,
    ):
        super().__init__()
        check_objective(model, loss)
        model.logit_scale.requires_grad_("logit_scale" in loss.scalars)
        self.save_hyperparameters(ignore=["model", "loss", "optimizer", "scheduler", "recipe"])
        self.recipe = recipe
        if recipe is not None:
            self.save_hyperparameters({"recipe": recipe.to_dict()})
        self.model, self.loss = model, loss
        self.make_optimizer, self.make_scheduler = optimizer, scheduler
        self.accumulate, self.gradient_clip_norm = accumulate, gradient_clip_norm
        self.temperature_lr_scale, self.layer_decay = temperature_lr_scale, layer_decay
        self.ema_decay, self.ema = ema_decay, None
        self._ema_state_to_restore: dict | None = None
        self.automatic_optimization = False
        self.samples_seen = 0
        self.bad_samples = torch.zeros(len(BAD_KINDS), dtype=torch.long)  # per kind, on the batches' device: no host sync
        self._val_bad_samples = torch.zeros(len(BAD_KINDS), dtype=torch.long)  # this validation pass's, kept apart
        self.last_validated_step = -1
        self.bad_steps = BadStepGuard(max_consecutive_bad_steps)
        self._rng_states_to_restore: dict | None = None
        self._gathered = ExitStack()

    def on_train_epoch_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if hasattr(datamodule, "set_epoch"):
            datamodule.set_epoch(self.current_epoch)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        optimizer = self.optimizers()
        losses = contrastive_backward(
            self.model,
            self.loss,
            batch,
            self.accumulate,
            backward=self.manual_backward,
            no_sync=getattr(self.trainer.strategy, "block_backward_sync", nullcontext),  # single device: none
        )
        scheduler = self.lr_schedulers()
        lr = scheduler.get_last_lr()[0]  # a float the scheduler keeps on the host: no sync
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)  # fp16's loss scaler, else None
        loss_scale = 1.0 if scaler is None else scaler.get_scale()
        verdict = step_verdict(losses["loss"], self.parameters())
        if verdict.loss_finite and verdict.grads_finite:
            self.bad_steps.good()
            if self.gradient_clip_norm is not None:
                self._clip_gradients(verdict.grad_norm, loss_scale)
            optimizer.step()  # with a scaler: unscale, step, update
            scheduler.step()
            self.model.clamp_logit_scale_()
            if self.ema_decay is not None:
                self.weight_average().update(self.model)
        else:  # no parameter, optimizer-state or schedule update; the step count does not advance
            if scaler is not None:  # the scaler records the overflow, then backs its scale off
                scaler.unscale_(optimizer.optimizer)
                scaler.update()
            if verdict.loss_finite and scaler is not None:
                self.bad_steps.overflow()
            else:
                self.bad_steps.bad(self.global_step, self._last_checkpoint())
        optimizer.zero_grad(set_to_none=True)

        batch_size = batch["image"].shape[0]
        self.samples_seen += batch_size * self.trainer.world_size
        self._count_bad_samples(batch)
        host = torch.tensor  # numbers known on the host, logged as CPU tensors (no device copy; see the docstring)
        self.log("train/loss", host(verdict.mean_loss), prog_bar=True, batch_size=batch_size)  # averaged over ranks
        for name in sorted(losses.keys() - {"loss"}):
            self.log(f"train/{name}", losses[name], batch_size=batch_size, sync_dist=True)
        if self.model.logit_bias is not None:
            self.log("train/logit_bias", whole(self.model.logit_bias.detach()), batch_size=batch_size)
        self.log("train/logit_scale", whole(self.model.logit_scale.detach()).exp(), batch_size=batch_size)
        self.log("lr", host(lr), batch_size=batch_size)
        self.log("train/grad_norm", verdict.grad_norm / loss_scale, batch_size=batch_size)  # before clipping
        self.log("train/samples_seen", host(float(self.samples_seen)), batch_size=batch_size)
        self.log("train/skipped_steps", host(float(self.bad_steps.skipped)), batch_size=batch_size)
        bad_samples = all_reduce_sum(self.bad_samples).float()  # one collective for every kind
        self.log_dict(bad_sample_metrics(bad_samples), batch_size=batch_size)
        return losses["loss"]

    def _clip_gradients(self, grad_norm: torch.Tensor, loss_scale: float) -> None:
        """Clip the global norm of the true gradient to `gradient_clip_norm`.

        grad_norm: () the gradients' total norm from the step's verdict, so it is not summed again.
        Under fp16 the gradients are still multiplied by the loss scaler's `loss_scale` (Lightning
        unscales them only inside `optimizer.step`, after any clipping in manual optimization; a fused
        optimizer unscales inside its kernel), so the scaled gradients are clipped at
        `gradient_clip_norm × loss_scale`: the same factor as unscaling first and clipping at
        `gradient_clip_norm`. Under FSDP each rank scales its own shards by the same factor.
        """
        clip_to_norm_(local_grads(self.parameters()), self.gradient_clip_norm * loss_scale, grad_norm)

    def weight_average(self) -> WeightAverage:
        """The EMA, made on first use from the weights then in the model (after a resume restored them), and
        given the resumed checkpoint's average when there is one."""
        if self.ema is None:
            self.ema = WeightAverage(self.model, self.ema_decay)
            if self._ema_state_to_restore is not None:
                self.ema.load_checkpoint_state(self._ema_state_to_restore)
                self._ema_state_to_restore = None
        return self.ema

    def _last_checkpoint(self) -> str | None:
        callback = self.trainer.checkpoint_callback
        return (getattr(callback, "last_model_path", None) or getattr(callback, "best_model_path", None)) or None

    def _count_bad_samples(self, batch: dict[str, torch.Tensor]) -> None:
        self.bad_samples = self.bad_samples.to(batch["bad_samples"].device) + batch["bad_samples"]

    def configure_model(self) -> None:
        """Under `trainer=fsdp` the strategy shards the model here, on each rank, before the optimizer is built
        (`clip_train.training.fsdp`); other strategies wrap the module themselves."""
        shard = getattr(self.trainer.strategy, "shard", None)
        if shard is not None and self.ema_decay is not None:
            raise ValueError("optim.ema.decay is not supported with trainer=fsdp (the average would need sharding too)")
        if shard is not None:
            shard(self.model)
            for teacher in teachers(self.loss):  # a distillation teacher is sharded like the student
                shard(teacher.model)

    def on_validation_model_eval(self) -> None:
        """Under FSDP validation and the evaluation tasks run on the whole parameters, gathered once
        (`FullyShardedStrategy.gathered`), so each rank may run its own number of forwards."""
        super().on_validation_model_eval()
        self._gathered = ExitStack()
        self._gathered.enter_context(getattr(self.trainer.strategy, "gathered", nullcontext)())
        if self.ema_decay is not None:  # validation and the evaluation tasks see the average
            self._gathered.enter_context(self.weight_average().swapped_in(self.model))

    def on_validation_model_train(self) -> None:
        self._gathered.close()
        super().on_validation_model_train()

    def on_validation_epoch_start(self) -> None:
        self._val_bad_samples = torch.zeros(len(BAD_KINDS), dtype=torch.long, device=self.device)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """{"image_features", "text_features"}: (B, D) unit-norm embeddings of the batch, for the validation tasks
        (computed here, under the precision plugin's autocast, as the training step computes them)."""
        self._val_bad_samples += batch["bad_samples"].to(self._val_bad_samples.device)
        image_features, text_features = (f.detach() for f in self.model(batch))
        return {"image_features": image_features, "text_features": text_features}

    def on_validation_epoch_end(self) -> None:
        self.log_dict(bad_sample_metrics(all_reduce_sum(self._val_bad_samples).float(), prefix="val"))
        if not self.trainer.sanity_checking:
            self.last_validated_step = self.global_step

    def configure_optimizers(self):
        groups = parameter_groups(self.model, self.temperature_lr_scale, self.layer_decay)
        optimizer = scale_learning_rates(self.make_optimizer(params=groups))
        scheduler = self.make_scheduler(optimizer, total_steps=self._total_optimizer_steps())
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _total_optimizer_steps(self) -> int:
        """The schedule's length from the trainer's limits and the data module's epoch
        (`clip_train.training.training_length`)."""
        trainer = self.trainer
        batches_per_epoch = getattr(getattr(trainer, "datamodule", None), "batches_per_epoch", None)
        return total_optimizer_steps(trainer.max_steps, trainer.max_epochs, batches_per_epoch, trainer.limit_train_batches)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["counters"] = {
            "samples_seen": self.samples_seen,
            "bad_samples": dict(zip(BAD_KINDS, self.bad_samples.tolist())),
            "skipped_steps": self.bad_steps.skipped,
        }
        checkpoint["rng_states"] = every_rank_rng_states()  # runs on every rank; rank 0 writes the file
        if self.ema_decay is not None:
            checkpoint[EMA_KEY] = self.weight_average().checkpoint_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # keys of transformers 4 or 5, and the 0-d temperature of checkpoints before issue 23; under FSDP the
        # strategy has loaded the weights itself, shard by shard, and taken them out of `checkpoint`
        if "state_dict" in checkpoint:
            checkpoint["state_dict"] = match_model_state(checkpoint["state_dict"], self.state_dict())
        fit_0d_optimizer_moments(checkpoint.get("optimizer_states", []))
        if self.ema_decay is not None and EMA_KEY in checkpoint:  # without one, the average starts from the weights
            self._ema_state_to_restore = match_model_state(checkpoint[EMA_KEY], self.state_dict())
        counters = checkpoint.get("counters", {})
        self.samples_seen = counters.get("samples_seen", 0)
        bad_samples = counters.get("bad_samples", {})  # {kind: count}
        self.bad_samples = torch.tensor([bad_samples.get(kind, 0) for kind in BAD_KINDS], dtype=torch.long)
        self.bad_steps.skipped = counters.get("skipped_steps", 0)
        self._rng_states_to_restore = rank_rng_states(checkpoint.get("rng_states"), self.global_rank)

    def on_fit_start(self) -> None:
        """Each rank its own dropout masks: re-seeded with seed + rank, now that the rank is known and the
        model (built from the shared seed) is the same on every rank (`clip_train.training.rng_state`).
        A distillation teacher, outside the module tree, is moved to the student's device here (under FSDP its
        sharding put it there)."""
        seed_rank(self.global_rank)
        if getattr(self.trainer.strategy, "shard", None) is None:
            for teacher in teachers(self.loss):
                teacher.model.to(self.device)

    def on_train_start(self) -> None:
        """Random states come back only now, after the DataLoaders have drawn their worker seeds. The EMA starts
        here, from the weights training starts with (or a resumed checkpoint's average)."""
        if self.ema_decay is not None:
            self.weight_average()
        if self._rng_states_to_restore is not None:
            set_rng_states(self._rng_states_to_restore, self.local_rank)
            self._rng_states_to_restore = None
