"""Small tensor helpers shared by the model families and the callbacks."""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["product", "as_members"]


def product(factors: Sequence[torch.Tensor]) -> torch.Tensor:
    """End-to-end map ``W_D ... W_1`` of batched factors (first factor applied first)."""
    w = factors[0]
    for f in factors[1:]:
        w = torch.matmul(f, w)
    return w


def as_members(matrix: torch.Tensor) -> torch.Tensor:
    """View a ``(n, m)`` matrix as ``(1, n, m)``; pass ``(E, n, m)`` through."""
    if matrix.dim() == 2:
        return matrix.unsqueeze(0)
    if matrix.dim() == 3:
        return matrix
    raise ValueError(f"Expected a matrix of shape (n, m) or (E, n, m), got shape {tuple(matrix.shape)}")
