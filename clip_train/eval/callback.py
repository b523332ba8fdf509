"""Evaluation during training: the configured evaluation tasks and dashboard figures, with every validation.

Validation already runs retrieval on the validation shards (`val/...`, see `ClipModule`) every
`trainer.val_check_interval` steps, and `train.run` validates once more at the end of fit if the
last validation predates the final step; this callback hooks into those same moments, so the
tasks' numbers (zero-shot, compositional, ...) and figures come at the same steps and end up in `metrics.json`.

Under FSDP the whole parameters are gathered for the validation pass (`ClipModule.on_validation_model_eval`),
so the tasks call the towers as they do unsharded.
"""

from collections.abc import Mapping

import lightning as L
import torch

from clip_train.eval.dashboard import log_figure
from clip_train.eval.figures import retrieval_examples, similarity_heatmap, thumbnails
from clip_train.eval.tasks import named_tasks, run_tasks
from clip_train.inference import ClipModel


class EvaluationCallback(L.Callback):
    """Runs `tasks` (the instantiated `eval.tasks` tree, `clip_train.eval.tasks`) with every validation,
    every rank its share, and logs their float metrics (`zeroshot/<set>/top1`, `compositional/<kind>`, ...);
    when `figures`, also the similarity heatmap of the first `examples` pairs of the first validation batch
    and their retrieval examples (`figures/...`).
    """

    def __init__(self, tasks: Mapping, figures: bool = True, examples: int = 8):
        self.tasks = named_tasks(tasks)
        self.figures, self.examples = figures, examples
        self._first_batch: tuple[torch.Tensor, list[str], torch.Tensor] | None = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        skip = batch_idx or dataloader_idx or not self.figures or trainer.sanity_checking
        if skip or not trainer.is_global_zero:
            return
        few = {key: value[: self.examples] for key, value in batch.items() if key != "bad_samples"}
        image_features, text_features = pl_module.model(few)
        captions = trainer.datamodule.tokenizer.batch_decode(few["input_ids"], skip_special_tokens=True)
        self._first_batch = (few["image"].cpu(), [c.strip() for c in captions], (text_features @ image_features.T).cpu())

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        recipe = pl_module.recipe
        model = ClipModel(pl_module.model, trainer.datamodule.tokenizer, recipe)
        for name, value in run_tasks(self.tasks, model, trainer.global_rank, trainer.world_size).items():
            if isinstance(value, float):  # a breakdown (zero-shot per_class) is no scalar: evaluate.py reports it
                pl_module.log(name, value)
        if self._first_batch is not None:
            pixels, captions, similarity = self._first_batch
            images = thumbnails(pixels, recipe.image_mean, recipe.image_std)
            log_figure(trainer, "figures/similarity", similarity_heatmap(images, captions, similarity))
            log_figure(trainer, "figures/retrieval_examples", retrieval_examples(images, captions, similarity))
            self._first_batch = None
