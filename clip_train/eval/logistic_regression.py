"""Multinomial logistic regression on frozen features, and its L2 strength chosen on a validation split.

The fit minimises mean cross-entropy + weight_decay / 2 · ‖W‖² (the bias is not penalised) with full-batch
L-BFGS (strong Wolfe line search) in float64 from zeros: the objective is strictly convex for
weight_decay > 0, so the result does not depend on initialisation or batch order, and the same features on the
same kind of device give the same weights on every process.

The search follows CLIP_benchmark's linear probe (`clip_benchmark/metrics/linear_probe.py`, read, not copied):
the grid is 97 values log-spaced from 1e-6 to 1e2; first its 7 values 1e-6, 1e-4/3, ..., 1e2 (every 16th) are
fitted on the training part and scored (top-1) on the validation part; then around the best index the
neighbours at ±8, ±4, ±2, ±1 grid steps, moving to the best each time. A tie goes to the smaller weight decay.
CLIP_benchmark fits with AdamW and uses its decoupled weight decay; here the same numbers are an L2
coefficient of an exact L-BFGS fit (OpenAI's CLIP paper fitted with L-BFGS too).
"""

import torch

WEIGHT_DECAY_GRID = tuple(10 ** (-6 + 8 * k / 96) for k in range(97))
COARSE_STEP = 16  # every 16th grid value: 1e-6, 10^(-14/3), ..., 1e2
REFINE_SPANS = (8, 4, 2, 1)


def fit(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, weight_decay: float, max_iter: int = 500
) -> torch.Tensor:
    """features (N, D), labels (N,) -> weights (D + 1, C) float64, the last row the bias: logits = [x, 1] @ weights."""
    x = torch.cat([features.double(), features.new_ones(len(features), 1, dtype=torch.float64)], dim=1)
    weights = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, device=features.device, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weights], lr=1, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-12, history_size=20,
        line_search_fn="strong_wolfe",
    )  # fmt: skip

    def objective():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weights, labels) + weight_decay / 2 * weights[:-1].pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
    return weights.detach()


def logits(weights: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """(N, D) features -> (N, C) float64 logits of a fitted `weights` (D + 1, C)."""
    return features.double() @ weights[:-1] + weights[-1]


def top1(weights: torch.Tensor, features: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits(weights, features).argmax(dim=-1) == labels).double().mean())


def choose_weight_decay(
    train: tuple[torch.Tensor, torch.Tensor],
    validation: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
    max_iter: int = 500,
) -> tuple[float, dict[float, float]]:
    """The grid value with the best validation top-1 by the coarse-then-refine search; and {weight decay: validation
    top-1} of every value tried. train, validation: (features (N, D), labels (N,)); max_iter: of each fit."""
    scores: dict[int, float] = {}

    def score(index: int) -> float:
        if index not in scores:
            scores[index] = top1(fit(*train, num_classes, WEIGHT_DECAY_GRID[index], max_iter), *validation)
        return scores[index]

    def best(indices) -> int:
        return max(sorted(set(indices)), key=lambda i: (score(i), -i))  # ties: the smaller weight decay

    peak = best(range(0, len(WEIGHT_DECAY_GRID), COARSE_STEP))
    for span in REFINE_SPANS:
        peak = best([max(peak - span, 0), peak, min(peak + span, len(WEIGHT_DECAY_GRID) - 1)])
    return WEIGHT_DECAY_GRID[peak], {WEIGHT_DECAY_GRID[i]: accuracy for i, accuracy in sorted(scores.items())}
