"""Evaluation during training: zero-shot and compositional accuracy, and dashboard figures, with every validation.

Validation already runs retrieval on the validation shards (`val/...`, see `ClipModule`) every
`trainer.val_check_interval` steps, and `train.run` validates once more at the end of fit if the
last validation predates the final step; this callback hooks into those same moments, so
zero-shot numbers and figures come at the same steps and end up in `metrics.json`.

Under FSDP the callback stands aside (with a warning): outside the sharded forward the
parameters are shards, so the towers cannot be called directly; evaluate the checkpoints with
`python -m clip_train.evaluate` instead.
"""

import lightning as L
import torch
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_warn

from clip_train.eval.compositional import CompositionalSet, compositional_metrics
from clip_train.eval.dashboard import log_figure
from clip_train.eval.figures import retrieval_examples, similarity_heatmap, thumbnails
from clip_train.eval.runner import zeroshot_metrics
from clip_train.eval.zeroshot import ZeroShotSet
from clip_train.inference import ClipModel


class EvaluationCallback(L.Callback):
    """Logs `zeroshot/<name>/top1|top5` for each set of `zeroshot` ({name: ZeroShotSet fields}) and
    `compositional/<kind>` and `compositional/mean` for `compositional` (CompositionalSet fields; None:
    none), computed with every rank encoding its share, and, when `figures`, the similarity heatmap of
    the first `examples` pairs of the first validation batch and their retrieval examples (`figures/...`).
    images_per_class: zero-shot on the first N images of each class only, a cheaper estimate; None for all.
    """

    def __init__(
        self,
        zeroshot: dict,
        cache_dir: str,
        images_per_class: int | None = None,
        figures: bool = True,
        examples: int = 8,
        batch_size: int = 128,
        compositional: dict | None = None,
    ):
        self.sets = {name: ZeroShotSet.from_config(name, spec) for name, spec in (zeroshot or {}).items()}
        self.compositional = CompositionalSet.from_config(compositional) if compositional is not None else None
        self.cache_dir, self.images_per_class = cache_dir, images_per_class
        self.figures, self.examples, self.batch_size = figures, examples, batch_size
        self._first_batch: tuple[torch.Tensor, list[str], torch.Tensor] | None = None
        self._sharded = False

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._sharded = isinstance(trainer.strategy, FSDPStrategy)
        if self._sharded and (self.sets or self.compositional or self.figures):
            rank_zero_warn(
                "zero-shot, compositional and figures during training are off under FSDP; use python -m clip_train.evaluate"
            )

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        skip = batch_idx or dataloader_idx or not self.figures or trainer.sanity_checking or self._sharded
        if skip or not trainer.is_global_zero:
            return
        few = {key: value[: self.examples] for key, value in batch.items() if key != "bad_samples"}
        image_features, text_features = pl_module.model(few)
        captions = trainer.datamodule.tokenizer.batch_decode(few["input_ids"], skip_special_tokens=True)
        self._first_batch = (few["image"].cpu(), [c.strip() for c in captions], (text_features @ image_features.T).cpu())

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self._sharded:
            return
        recipe = pl_module.recipe
        model = ClipModel(pl_module.model, trainer.datamodule.tokenizer, recipe)
        for name, spec in self.sets.items():
            result = zeroshot_metrics(
                model,
                name,
                spec,
                self.cache_dir,
                rank=trainer.global_rank,
                world=trainer.world_size,
                batch_size=self.batch_size,
                images_per_class=self.images_per_class,
            )
            pl_module.log(f"zeroshot/{name}/top1", result["top1"])
            pl_module.log(f"zeroshot/{name}/top5", result["top5"])
        if self.compositional is not None:
            share = {"rank": trainer.global_rank, "world": trainer.world_size, "batch_size": self.batch_size}
            for kind, value in compositional_metrics(model, self.compositional, **share).items():
                pl_module.log(f"compositional/{kind}", value)
        if self._first_batch is not None:
            pixels, captions, similarity = self._first_batch
            images = thumbnails(pixels, recipe.image_mean, recipe.image_std)
            log_figure(trainer, "figures/similarity", similarity_heatmap(images, captions, similarity))
            log_figure(trainer, "figures/retrieval_examples", retrieval_examples(images, captions, similarity))
            self._first_batch = None
