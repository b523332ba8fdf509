"""CoCa's captioning objective: the mean over captions of each caption's next-token NLL.

Each caption's NLL is already the mean over its own tokens (`CoCa.training_forward`), so every
caption weighs the same whatever its length. The mean over the local batch is therefore exact
under accumulation (the NLLs of all micro-batches are concatenated first) and under DDP (every
rank has the same B, and DDP averages the gradients over ranks).
"""

import torch

from clip_train.model.outputs import TrainingOutputs
from clip_train.objectives.objective import Objective


class Caption(Objective):
    """{"loss": mean caption NLL} of a captioning model; weigh it against a contrastive term with `WeightedSum`."""

    reads = frozenset({"caption_nll"})

    def forward(self, outputs: TrainingOutputs) -> dict[str, torch.Tensor]:
        return {"loss": outputs.caption_nll.float().mean()}
