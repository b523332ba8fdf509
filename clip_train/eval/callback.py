"""Evaluation during training: the one place that runs tasks with every validation, and the dashboard figures.

Lightning's validation loop feeds the validation tasks (`clip_train.eval.tasks.ValidationTask`: retrieval and
captioning on the validation shards, `val/...`) with each batch and the embeddings `ClipModule.validation_step`
computed for it; at the end of the pass they and the evaluation tasks (`eval.tasks`: zero-shot,
compositional, ...) run through `run_tasks`, the loop `python -m clip_train.evaluate` runs too. Validation
comes every `trainer.val_check_interval` steps, and `train.run` validates once more at the end of fit if
the last validation predates the final step, so every number of a step ends up in `metrics.json`.

Under FSDP the whole parameters are gathered for the validation pass (`ClipModule.on_validation_model_eval`),
so the tasks call the towers as they do unsharded.
"""

from collections.abc import Mapping

import lightning as L
import torch

from clip_train.eval.dashboard import log_figure, log_table
from clip_train.eval.figures import retrieval_examples, similarity_heatmap, thumbnails
from clip_train.eval.tasks import ValidationTask, named_tasks, run_tasks
from clip_train.inference import ClipModel


class EvaluationCallback(L.Callback):
    """Runs `validation` ({name: ValidationTask}, metrics `val/<metric>`) over every validation pass, sanity
    check included, and `tasks` (the instantiated `eval.tasks` tree, `clip_train.eval.tasks`) after every validation
    but the sanity check, every rank its share, and logs their float metrics (`val/image_to_text_R@1`,
    `zeroshot/<set>/top1`, `compositional/<kind>`, ...); the validation tasks' tables go to the dashboard as
    `val/<name>`. When `figures`, also the similarity heatmap of the first `examples` pairs of the first
    validation batch and their retrieval examples (`figures/...`).
    """

    def __init__(self, tasks: Mapping, validation: Mapping[str, ValidationTask] | None = None, figures: bool = True,
                 examples: int = 8):  # fmt: skip
        self.tasks = named_tasks(tasks)
        self.validation = dict(validation or {})
        self.figures, self.examples = figures, examples
        self._first_batch: tuple[torch.Tensor, list[str], torch.Tensor] | None = None
        self._model: ClipModel | None = None

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._model = ClipModel(pl_module.model, trainer.datamodule.tokenizer, pl_module.recipe)
        for task in self.validation.values():
            task.start(trainer.global_rank, trainer.world_size)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        for task in self.validation.values():
            task.observe(self._model, batch, outputs)
        skip = batch_idx or dataloader_idx or not self.figures or trainer.sanity_checking
        if skip or not trainer.is_global_zero:
            return
        few = {key: value[: self.examples] for key, value in batch.items() if key != "bad_samples"}
        image_features, text_features = pl_module.model(few)
        captions = trainer.datamodule.tokenizer.batch_decode(few["input_ids"], skip_special_tokens=True)
        self._first_batch = (few["image"].cpu(), [c.strip() for c in captions], (text_features @ image_features.T).cpu())

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        model = self._model
        metrics = run_tasks(
            [("val", task) for task in self.validation.values()], model, trainer.global_rank, trainer.world_size
        )
        if not trainer.sanity_checking:
            metrics |= run_tasks(self.tasks, model, trainer.global_rank, trainer.world_size)
        for name, value in metrics.items():
            if isinstance(value, float):  # a breakdown (zero-shot per_class) is no scalar: evaluate.py reports it
                pl_module.log(name, value)
        if trainer.sanity_checking:
            return
        for task in self.validation.values():
            for key, (columns, rows) in getattr(task, "tables", dict)().items():
                log_table(trainer, f"val/{key}", columns, rows)
        if self._first_batch is not None:
            pixels, captions, similarity = self._first_batch
            images = thumbnails(pixels, model.recipe.image_mean, model.recipe.image_std)
            log_figure(trainer, "figures/similarity", similarity_heatmap(images, captions, similarity))
            log_figure(trainer, "figures/retrieval_examples", retrieval_examples(images, captions, similarity))
            self._first_batch = None
