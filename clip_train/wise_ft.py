"""WiSE-FT (Wortsman et al., 2022): the weights of a fine-tuned model interpolated with those it started from.

    theta(alpha) = (1 - alpha) * theta_source + alpha * theta_fine_tuned

Alpha 0 is the source and alpha 1 the fine-tuned model, exactly (both ends copy, they do not compute); in
between, the interpolation often keeps the source's robustness with most of the fine-tuning's gain.

    python -m clip_train.export checkpoint=FINE_TUNED out=DIR wise_ft.source=SOURCE wise_ft.alpha=0.5
    python -m clip_train.evaluate checkpoint=FINE_TUNED wise_ft.source=SOURCE wise_ft.alphas=[0,0.25,0.5,0.75,1]

The second writes the evaluation table (`results.md`) with one column per alpha. SOURCE is anything
`clip_train.load` reads (a checkpoint or an export) with the fine-tuned model's architecture: parameters
and buffers must match by name and shape. Integer buffers (counters) are the fine-tuned model's.
"""

import copy

import torch

from clip_train.inference import ClipModel


@torch.no_grad()
def interpolate(source: ClipModel, tuned: ClipModel, alpha: float) -> ClipModel:
    """A copy of `tuned` whose floating-point weights are (1 - alpha) * source's + alpha * tuned's."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"wise_ft.alpha={alpha} is not between 0 (the source) and 1 (the fine-tuned model)")
    ours, theirs = tuned.state_dict(), source.state_dict()
    if ours.keys() != theirs.keys():
        missing, extra = sorted(ours.keys() - theirs.keys()), sorted(theirs.keys() - ours.keys())
        raise ValueError(f"wise_ft.source has other weights than the fine-tuned model (lacks {missing[:3]}, has {extra[:3]})")
    mixed = {}
    for name, value in ours.items():
        if value.shape != theirs[name].shape:
            raise ValueError(f"wise_ft.source's {name} is {tuple(theirs[name].shape)}, the fine-tuned {tuple(value.shape)}")
        if not value.is_floating_point() or alpha == 1:
            mixed[name] = value.clone()
        elif alpha == 0:
            mixed[name] = theirs[name].to(value).clone()
        else:
            mixed[name] = torch.lerp(theirs[name].to(value), value, alpha)
    model = copy.deepcopy(tuned.network)
    model.load_state_dict(mixed)
    return ClipModel(model, tuned.tokenizer, tuned.recipe)
