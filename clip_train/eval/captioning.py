"""Caption quality on the validation shards: BLEU-4 (torchmetrics) and CIDEr (pycocoevalcap).

During validation, `CaptionEvaluation` captions `samples` validation images in all, greedily:
each rank the first images of its own share, rank r taking samples // world + (r < samples % world)
of them, so the ranks together caption `samples` images whatever the world size (fewer only if a
rank's share holds fewer images than its part). Each caption is compared with the image's own
caption (decoded from its tokens, so both sides went through the same normalisation), and the
pairs of every rank are gathered and scored as one corpus. CIDEr uses
pycocoevalcap's pure-Python scorer; its Java parts (PTB tokenizer, METEOR, SPICE) are not used:
captions are tokenised here into lowercase words.
"""

import json
import os
import re

import lightning as L
import torch.distributed as dist
from pycocoevalcap.cider.cider import Cider
from torchmetrics.functional.text import bleu_score

from clip_train.data.tokenizer import start_and_end_ids
from clip_train.distributed import rank_and_world


def words(caption: str) -> str:
    """Lowercase words and numbers joined by single spaces: the tokenisation both scores use."""
    return " ".join(re.findall(r"[a-z0-9]+", caption.lower()))


def caption_metrics(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Corpus BLEU-4 and CIDEr (CIDEr-D as in the COCO caption evaluation) of one prediction per image
    against its one reference; every rank passes its own pairs and gets the scores of all ranks' pairs."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    pairs = list(zip(predictions, references))
    if rank_and_world()[1] > 1:
        shares = [None] * dist.get_world_size()
        dist.all_gather_object(shares, pairs)
        pairs = [pair for share in shares for pair in share]
    if not pairs:
        return {}
    hypotheses, targets = [words(p) for p, _ in pairs], [words(r) for _, r in pairs]
    bleu = float(bleu_score(hypotheses, [[t] for t in targets], n_gram=4))
    cider, _ = Cider().compute_score({i: [t] for i, t in enumerate(targets)}, {i: [h] for i, h in enumerate(hypotheses)})
    return {"bleu4": bleu, "cider": float(cider)}


class CaptionEvaluation(L.Callback):
    """Captions validation images of a captioning model (CoCa) and logs `val/bleu4`, `val/cider` and
    `examples` (reference, caption) pairs: as a table to wandb, as text to TensorBoard, and to
    `captions.jsonl` beside the CSV log. Does nothing for a model without a caption decoder.

    samples: validation images captioned over all ranks together (greedy, the model's context length);
        with several ranks the examples come from rank 0's part.
    """

    def __init__(self, samples: int = 64, examples: int = 8):
        self.samples, self.examples = samples, examples
        self._predictions: list[str] = []
        self._references: list[str] = []
        self._rank_samples = samples

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._predictions, self._references = [], []
        rank, world = trainer.global_rank, trainer.world_size  # this rank's part of the budget: the parts sum to `samples`
        self._rank_samples = self.samples // world + (rank < self.samples % world)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0):
        room = self._rank_samples - len(self._predictions)
        if room <= 0 or not hasattr(pl_module.model, "generate"):
            return
        tokenizer = trainer.datamodule.tokenizer
        ids = pl_module.model.generate(batch["image"][:room], *start_and_end_ids(tokenizer))
        self._predictions += tokenizer.batch_decode(ids, skip_special_tokens=True)
        self._references += tokenizer.batch_decode(batch["input_ids"][:room], skip_special_tokens=True)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not hasattr(pl_module.model, "generate"):
            return
        metrics = caption_metrics(self._predictions, self._references)  # every rank joins the gather
        pl_module.log_dict({f"val/{name}": value for name, value in metrics.items()})  # equal on every rank
        if trainer.is_global_zero and not trainer.sanity_checking:
            rows = [[words(r), words(p)] for r, p in zip(self._references, self._predictions)][: self.examples]
            _log_examples(trainer, rows)


def _log_examples(trainer, rows: list[list[str]]) -> None:
    for logger in trainer.loggers:
        name = type(logger).__name__
        if name == "WandbLogger":
            logger.log_text(key="val/captions", columns=["reference", "caption"], data=rows, step=trainer.global_step)
        elif name == "TensorBoardLogger":
            table = "\n".join(f"| {r} | {c} |" for r, c in rows)
            logger.experiment.add_text("val/captions", f"| reference | caption |\n|---|---|\n{table}", trainer.global_step)
        elif name == "CSVLogger":
            os.makedirs(logger.log_dir, exist_ok=True)
            with open(os.path.join(logger.log_dir, "captions.jsonl"), "a") as f:
                f.write(json.dumps({"step": trainer.global_step, "examples": rows}) + "\n")
