"""Caption quality on the validation shards: BLEU-4 (torchmetrics) and CIDEr (pycocoevalcap).

During validation, `CaptionTask` captions `samples` validation images in all, greedily:
each rank the first images of its own share, rank r taking samples // world + (r < samples % world)
of them, so the ranks together caption `samples` images whatever the world size (fewer only if a
rank's share holds fewer images than its part). Each caption is compared with the image's own
caption (decoded from its tokens, so both sides went through the same normalisation), and the
pairs of every rank are gathered and scored as one corpus. CIDEr uses
pycocoevalcap's pure-Python scorer; its Java parts (PTB tokenizer, METEOR, SPICE) are not used:
captions are tokenised here into lowercase words.
"""

import re

import torch
import torch.distributed as dist
from pycocoevalcap.cider.cider import Cider
from torchmetrics.functional.text import bleu_score

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


class CaptionTask:
    """Captions validation images of a captioning model (CoCa) and reports `val/bleu4`, `val/cider` (a
    `ValidationTask`); `tables()` gives `examples` (reference, caption) pairs for the dashboard (`val/captions`).
    Reports nothing for a model without a caption decoder.

    samples: validation images captioned over all ranks together (greedy, the model's context length);
        with several ranks the examples come from rank 0's part.
    """

    def __init__(self, samples: int = 64, examples: int = 8):
        self.samples, self.examples = samples, examples
        self._predictions: list[str] = []
        self._references: list[str] = []
        self._rank_samples = samples

    def start(self, rank: int, world: int) -> None:
        self._predictions, self._references = [], []
        self._rank_samples = self.samples // world + (rank < self.samples % world)  # the parts sum to `samples`

    def observe(self, model, batch: dict[str, torch.Tensor], features: dict[str, torch.Tensor]) -> None:
        room = self._rank_samples - len(self._predictions)
        if room <= 0 or not model.can_caption:
            return
        ids = model.caption_ids(batch["image"][:room])
        self._predictions += model.tokenizer.batch_decode(ids, skip_special_tokens=True)
        self._references += model.tokenizer.batch_decode(batch["input_ids"][:room], skip_special_tokens=True)

    def run(self, model, rank: int, world: int) -> dict[str, float]:
        if not model.can_caption:
            return {}
        return caption_metrics(self._predictions, self._references)  # every rank joins the gather

    def tables(self) -> dict[str, tuple[list[str], list[list[str]]]]:
        """{"captions": (columns, this rank's first `examples` [reference, caption] rows)}; none without captions."""
        rows = [[words(r), words(p)] for r, p in zip(self._references, self._predictions)][: self.examples]
        return {"captions": (["reference", "caption"], rows)} if rows else {}
