"""The configured optimizer is torch's fused AdamW, and its arithmetic is AdamW's.

`configs/optim/adamw.yaml` sets `fused: true`: one kernel for all parameters instead of a
loop of small ops per parameter (on the CPU too). The reference below is AdamW written out
from Loshchilov & Hutter's update rule, not torch's implementation.
"""

import torch
from helpers import small_encoder
from hydra.utils import instantiate

from clip_train.training.optim import parameter_groups


def reference_adamw(params, grads_per_step, lr, betas, eps, weight_decays):
    """Decoupled weight decay, bias-corrected moments; eps added to the root of the second moment."""
    beta1, beta2 = betas
    params = [p.detach().clone().double() for p in params]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    for step, grads in enumerate(grads_per_step, start=1):
        for i, (p, g) in enumerate(zip(params, grads)):
            g = g.double()
            p.mul_(1 - lr * weight_decays[i])
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            m_hat, v_hat = m[i] / (1 - beta1**step), v[i] / (1 - beta2**step)
            p.sub_(lr * m_hat / (v_hat.sqrt() + eps))
    return params


def test_the_configured_fused_adamw_takes_the_reference_adamw_steps(compose_config):
    cfg = compose_config()
    torch.manual_seed(0)
    model = small_encoder()
    groups = parameter_groups(model)
    optimizer = instantiate(cfg.optim.optimizer)(params=groups)
    assert optimizer.defaults["fused"] is True
    params = [p for group in groups for p in group["params"]]
    decay = cfg.optim.optimizer.weight_decay
    weight_decays = [decay] * len(groups[0]["params"]) + [0.0] * len(groups[1]["params"])
    assert 0 < len(groups[1]["params"]) < len(params)  # both groups are exercised
    generator = torch.Generator().manual_seed(1)
    grads_per_step = [[torch.randn(p.shape, generator=generator) for p in params] for _ in range(5)]
    expected = reference_adamw(params, grads_per_step, cfg.optim.optimizer.lr, tuple(cfg.optim.optimizer.betas),
                               cfg.optim.optimizer.eps, weight_decays)  # fmt: skip
    initial = [p.detach().clone() for p in params]
    for grads in grads_per_step:
        for p, g in zip(params, grads):
            p.grad = g.clone()
        optimizer.step()
    moved = max((p.detach() - before).abs().max().item() for p, before in zip(params, initial))
    assert moved > 1e-4  # the steps changed the parameters, so the comparison below means something
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.detach().double(), e, rtol=1e-5, atol=1e-6)
