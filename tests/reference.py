"""Independent reference computations: a plain PyTorch gradient-descent loop written from the paper.

Nothing here imports cpl's module or callbacks; it only takes the initial factors and the tasks.
"""

from __future__ import annotations

import numpy as np
import torch


def plain_matcomp_gd(factors, pre_target, pre_mask, final_target, final_mask, lr, at_step, steps, record_every=1):
    """Full-batch GD on L = 1/(2 n_obs) sum_observed (W - M)^2, switching task at ``at_step``.

    Returns ``{step: W}`` (float64 numpy) for every ``record_every`` steps and the last step.
    """
    ws = [f.detach().clone().double().requires_grad_(True) for f in factors]
    out = {}

    def end_to_end():
        w = ws[0]
        for f in ws[1:]:
            w = f @ w
        return w

    for step in range(steps + 1):
        if step % record_every == 0 or step == steps:
            out[step] = end_to_end().detach().numpy().copy()
        if step == steps:
            break
        target, mask = (pre_target, pre_mask) if step < at_step else (final_target, final_mask)
        obs = mask.bool()
        loss = 0.5 * ((end_to_end() - target.double())[obs] ** 2).mean()
        grads = torch.autograd.grad(loss, ws)
        with torch.no_grad():
            for w, g in zip(ws, grads):
                w -= lr * g
    return out


def errors(w: np.ndarray, target: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(mean squared error over all entries, over unobserved entries)."""
    d2 = (w - target) ** 2
    return float(d2.mean()), float(d2[mask == 0].mean())
