"""A training stage as a LightningModule, so Lightning brings DDP, accumulation, bf16 and checkpoints."""

import lightning as L
import torch

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

    def training_step(self, batch: dict, batch_index: int) -> torch.Tensor:
        loss = self.model(batch["input_ids"], batch["attention_mask"], batch["labels"], batch.get("pixels"))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["input_ids"]))
        return loss

    def configure_optimizers(self):
        if not any(p.requires_grad for p in self.model.parameters()):
            raise ValueError("this stage trains no parameter: the blind model has no connector and its LM is frozen")
        optimizer = torch.optim.AdamW(parameter_groups(self.model), lr=self.lr, weight_decay=self.weight_decay)
        scheduler = cosine_with_warmup(optimizer, self.warmup_steps, self.max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
