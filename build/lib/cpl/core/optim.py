"""Plain SGD over the members that train at the current step."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["ActiveSGD"]


class ActiveSGD(torch.optim.Optimizer):
    """Plain SGD (``p -= lr * p.grad``) that updates only the members the module trains at this step.

    Members outside ``module.active`` have no gradient at this step; skipping them saves the
    update of their slices (most of a batched sweep's members are dormant or finished at any time).
    With every member active it is ``torch.optim.SGD`` without momentum or weight decay.
    """

    def __init__(self, params, lr: float, module: Any):
        if lr <= 0:
            raise ValueError(f"Expected `lr` > 0, got {lr}")
        super().__init__(params, {"lr": lr})
        self._module = module

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        sel = self._module.active
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if isinstance(sel, slice):
                    p[sel].add_(p.grad[sel], alpha=-group["lr"])
                else:
                    p.index_add_(0, sel, p.grad[sel], alpha=-group["lr"])
        return loss
