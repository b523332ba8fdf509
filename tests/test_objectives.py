"""Every objective is exact under optim.accumulate (k micro-batches give the full-batch loss, its named terms
and every gradient, and the full batch equals its naive reference), and objectives are checked against models."""

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import pytest
import torch
from helpers import (
    K,
    batch_with_negatives,
    float64_encoder,
    make_batch,
    naive_align_uniform,
    naive_negclip,
    naive_siglip_with_negatives,
    small_coca,
    small_encoder,
)

from clip_train.objectives import Caption, InfoNCE, SigLip, WeightedSum, check_objective
from clip_train.objectives.align_uniform import AlignUniform
from clip_train.training.accumulation import contrastive_backward


def coca_objective() -> WeightedSum:
    return WeightedSum({"contrastive_loss": InfoNCE(), "caption_loss": Caption()}, {"contrastive_loss": 1, "caption_loss": 2})


def negatives_of(outputs) -> tuple:
    """The outputs' negatives, or K empty slots (no valid negative: the plain loss) for a batch without them."""
    if outputs.negative_text_features is not None:
        return outputs.negative_text_features, outputs.negative_valid
    rows, dim = outputs.image_features.shape
    return torch.zeros(rows, K, dim, dtype=outputs.image_features.dtype), torch.zeros(rows, K, dtype=torch.bool)


def negclip_reference(o) -> torch.Tensor:
    return naive_negclip(o.image_features, o.text_features, *negatives_of(o), o.scalars["logit_scale"])


def siglip_reference(o) -> torch.Tensor:
    return naive_siglip_with_negatives(
        o.image_features, o.text_features, *negatives_of(o), o.scalars["logit_scale"], o.scalars["logit_bias"]
    )


def coca_reference(o) -> torch.Tensor:
    return negclip_reference(o) + 2 * sum(o.caption_nll) / len(o.caption_nll)


def align_uniform_reference(o) -> torch.Tensor:
    return naive_align_uniform(o.image_features, o.text_features)["loss"]


def frozen_temperature_encoder():
    model = float64_encoder("infonce")
    model.logit_scale.requires_grad_(False)  # as ClipModule freezes it for an objective without a temperature
    return model


@dataclass
class Case:
    model: Callable
    objective: Callable
    batch: Callable
    reference: Callable  # TrainingOutputs -> the naive full-batch loss


CASES = {
    "infonce": Case(lambda: float64_encoder("infonce"), InfoNCE, make_batch, negclip_reference),
    "siglip": Case(lambda: float64_encoder("siglip"), SigLip, make_batch, siglip_reference),
    "infonce_negatives": Case(lambda: float64_encoder("infonce"), lambda: InfoNCE(K), batch_with_negatives, negclip_reference),
    "siglip_negatives": Case(lambda: float64_encoder("siglip"), lambda: SigLip(K), batch_with_negatives, siglip_reference),
    "coca": Case(lambda: small_coca().double(), coca_objective, make_batch, coca_reference),
    "align_uniform": Case(frozen_temperature_encoder, AlignUniform, make_batch, align_uniform_reference),
}


def step(case: Case, micro_batches: int, objective=None, batch=None) -> tuple[dict, dict]:
    """One accumulated backward: (the detached losses, every trained parameter's gradient)."""
    model = case.model()
    batch = case.batch() if batch is None else batch
    losses = contrastive_backward(
        model, objective or case.objective(), batch, micro_batches, lambda loss: loss.backward(), nullcontext
    )
    return losses, {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("micro_batches", [2, 4, 8])
@pytest.mark.parametrize("name", list(CASES))
def test_micro_batches_give_the_full_batch_losses_and_gradients(name, micro_batches):
    case = CASES[name]
    full_losses, full = step(case, 1)
    losses, accumulated = step(case, micro_batches)
    assert losses.keys() == full_losses.keys() and accumulated.keys() == full.keys()
    for term in full_losses:
        torch.testing.assert_close(losses[term], full_losses[term], msg=term)
    for parameter in full:  # the scale and bias included: their gradient is not micro_batches times too big
        torch.testing.assert_close(accumulated[parameter], full[parameter], msg=parameter)
    with torch.no_grad():
        torch.testing.assert_close(full_losses["loss"], case.reference(case.model().training_forward(case.batch())))
    if name != "align_uniform":
        assert full["logit_scale"].abs() > 0
    if name.startswith("siglip"):
        assert "logit_bias" in full and full["logit_bias"].abs() > 0
    if name.endswith("negatives"):  # the negatives did change the gradients
        _, without = step(case, 1, objective=type(case.objective())(0), batch=make_batch())
        assert not torch.allclose(without["text_tower.projection.weight"], full["text_tower.projection.weight"])
    if name == "coca":
        assert set(full_losses) == {"loss", "contrastive_loss", "caption_loss"}
        torch.testing.assert_close(full_losses["loss"], full_losses["contrastive_loss"] + 2 * full_losses["caption_loss"])
        assert full["lm_head.weight"].abs().sum() > 0 and full["decoder.layers.0.multihead_attn.in_proj_weight"].abs().sum() > 0
    if name == "align_uniform":
        assert set(full_losses) == {"loss", "alignment", "uniformity"}


def test_objectives_and_models_that_do_not_fit_are_refused():
    coca, encoder = small_coca(), small_encoder()
    check_objective(coca, coca_objective())
    check_objective(encoder, AlignUniform())
    with pytest.raises(ValueError, match=r"CoCa gives \['caption_nll'\] but InfoNCE does not read it.*loss=coca"):
        check_objective(coca, InfoNCE())
    with pytest.raises(ValueError, match=r"WeightedSum needs the model outputs \['caption_nll'\], which DualEncoder"):
        check_objective(encoder, coca_objective())
    with pytest.raises(ValueError, match="must name the same terms"):
        WeightedSum({"contrastive_loss": InfoNCE()}, {"contrastive": 1.0})


@pytest.mark.parametrize("loss", ["coca", "coca_siglip"])
def test_coca_configs_fit_the_coca_model_and_the_default_loss_does_not(compose_config, loss):
    from hydra.utils import instantiate

    cfg = compose_config("model=coca_test", f"loss={loss}")
    model = instantiate(cfg.model, text_tower={"vocab_size": 100})
    objective = instantiate(cfg.loss)
    check_objective(model, objective)
    assert dict(objective.weights) == {"contrastive_loss": 1.0, "caption_loss": 2.0}
    assert (model.logit_bias is not None) == (loss == "coca_siglip")
    default = compose_config("model=coca_test")
    with pytest.raises(ValueError, match="does not read it"):
        check_objective(instantiate(default.model, text_tower={"vocab_size": 100}), instantiate(default.loss))
