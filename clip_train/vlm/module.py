"""A training stage as a LightningModule, so Lightning brings DDP, accumulation, bf16 and checkpoints.

Bad records the loader skipped are logged as the CLIP trainer logs its own: `data/bad_samples` and
`data/bad_samples/<kind>`, running totals over all ranks since the stage started, kept in its checkpoints.
"""

import lightning as L
import torch

from clip_train.data.bad_data import BAD_KINDS, bad_sample_metrics
from clip_train.distributed import all_reduce_sum
from clip_train.training.optim import cosine_with_warmup, parameter_groups
from clip_train.vlm.model import VisionLanguageModel


class VisionLanguageModule(L.LightningModule):
    """Trains the parameters of `model` that require gradients (which ones is the stage's choice) with AdamW,
    grouped as the CLIP trainer groups them (no decay on biases, norms, embeddings), `warmup_steps` of linear
    warm-up then cosine decay to 0 at `max_steps` (`clip_train.training.optim`)."""

    def __init__(self, model: VisionLanguageModel, lr: float, weight_decay: float, warmup_steps: int, max_steps: int):
        super().__init__()
        self.model = model
        self.lr, self.weight_decay, self.warmup_steps, self.max_steps = lr, weight_decay, warmup_steps, max_steps
        self.bad_samples = torch.zeros(len(BAD_KINDS), dtype=torch.long)  # this rank's, per kind
        self.bad_sample_totals = self.bad_samples  # (K,) over all ranks since the stage started, as of the last step

    def on_train_epoch_start(self) -> None:
        self.trainer.datamodule.set_epoch(self.current_epoch)

    def training_step(self, batch: dict, batch_index: int) -> torch.Tensor:
        loss = self.model(batch["input_ids"], batch["attention_mask"], batch["labels"], batch.get("pixels"))
        size = len(batch["input_ids"])
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.bad_samples = self.bad_samples.to(batch["bad_samples"].device) + batch["bad_samples"]
        self.bad_sample_totals = all_reduce_sum(self.bad_samples)
        self.log_dict(bad_sample_metrics(self.bad_sample_totals.float()), batch_size=size)
        return loss

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["bad_samples"] = self.bad_sample_totals.cpu()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Rank 0 takes the saved totals of all ranks, the others start from 0, so their sum goes on from them."""
        saved = checkpoint.get("bad_samples", torch.zeros(len(BAD_KINDS), dtype=torch.long))
        self.bad_samples = saved if self.global_rank == 0 else torch.zeros_like(saved)
        self.bad_sample_totals = saved

    def configure_optimizers(self):
        if not any(p.requires_grad for p in self.model.parameters()):
            raise ValueError("this stage trains no parameter: the blind model has no connector and its LM is frozen")
        optimizer = torch.optim.AdamW(parameter_groups(self.model), lr=self.lr, weight_decay=self.weight_decay)
        scheduler = cosine_with_warmup(optimizer, self.warmup_steps, self.max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
