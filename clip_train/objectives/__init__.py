"""Training objectives: each maps a model's named `TrainingOutputs` to {"loss": total, <term>: ...}.

infonce.py (CLIP), siglip.py (sigmoid loss, ring of ranks), hard_negatives.py (NegCLIP's text hard
negatives for both), caption.py (CoCa's caption NLL), weighted_sum.py (several objectives at once),
distillation.py (a frozen teacher's logits as targets, OpenCLIP's --distill-model), align_uniform.py
(Wang & Isola; docs/extending.md's worked example of a new objective, configured by its module path); objective.py
holds the contract and the up-front check of an objective against a model.
"""

from clip_train.objectives.caption import Caption
from clip_train.objectives.distillation import Distillation
from clip_train.objectives.infonce import InfoNCE, infonce_loss
from clip_train.objectives.objective import Objective, check_objective
from clip_train.objectives.siglip import SigLip, siglip_loss
from clip_train.objectives.weighted_sum import WeightedSum

__all__ = [
    "Caption",
    "Distillation",
    "InfoNCE",
    "Objective",
    "SigLip",
    "WeightedSum",
    "check_objective",
    "infonce_loss",
    "siglip_loss",
]
