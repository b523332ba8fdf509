"""Several objectives trained together: the total is their weighted sum, each term logged by its name.

CoCa is InfoNCE (or SigLIP) weight 1 + mean caption NLL weight 2 (`configs/loss/coca.yaml`). Each term
sees the same `TrainingOutputs`, so a sum of objectives that are exact under accumulation and DDP
stays exact.
"""

import torch
from torch import nn

from clip_train.model.outputs import TrainingOutputs
from clip_train.objectives.objective import Objective


class WeightedSum(Objective):
    """{"loss": Σ weights[name] × terms[name], name: that term's loss, "name/part": its own named parts}.

    terms: the objectives by name (the names become metrics: `train/<name>`);
    weights: a weight for every term, by the same names.
    """

    def __init__(self, terms: dict[str, Objective], weights: dict[str, float]):
        super().__init__()
        if set(terms) != set(weights):
            raise ValueError(f"loss.terms {sorted(terms)} and loss.weights {sorted(weights)} must name the same terms")
        self.terms = nn.ModuleDict(dict(terms))
        self.weights = {name: float(weight) for name, weight in weights.items()}
        self.reads = frozenset().union(*(term.reads for term in self.terms.values()))
        self.scalars = frozenset().union(*(term.scalars for term in self.terms.values()))

    def side_outputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: value for term in self.terms.values() for name, value in term.side_outputs(batch).items()}

    def forward(self, outputs: TrainingOutputs) -> dict[str, torch.Tensor]:
        losses, total = {}, 0.0
        for name, term in self.terms.items():
            parts = term(outputs)
            total = total + self.weights[name] * parts["loss"]
            losses[name] = parts["loss"]
            losses |= {f"{name}/{part}": value for part, value in parts.items() if part != "loss"}
        return {"loss": total} | losses
