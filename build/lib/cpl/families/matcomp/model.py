"""Deep linear models with a leading member dimension.

Every parameter is shaped ``(E, ...)``: one module holds ``E`` independent members (seeds,
onsets, observation sets) that train as one tensor program. Member ``e`` is initialised from its
own seed exactly as a separate ``E = 1`` model with that seed would be.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ...core.linalg import product
from ...core.rng import random_orthogonal, stream_generator

__all__ = ["DeepMatrixFactorization"]


def _as_list(value, n: int, name: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"Expected `{name}` to have one entry per member ({n}), got {len(value)}")
        return list(value)
    return [value] * n


class DeepMatrixFactorization(nn.Module):
    """``W = W_D ... W_1`` with every ``W_i`` of shape ``(E, N, N)``, no bias.

    Args:
        size: N.
        depth: D >= 1.
        seeds: one seed per member; ``len(seeds)`` is E.
        init: ``"gaussian"``, the paper's: iid N(0, (g^(1/D)/sqrt(N))^2) entries, so that
            ``||W||_F`` is about ``g sqrt(N)`` at any depth; or ``"balanced"``: ``W_i = g^(1/D) O_i``
            with random orthogonal ``O_i``, which satisfies ``W_{i+1}^T W_{i+1} = W_i W_i^T`` exactly;
            or ``"aligned"``: balanced and aligned with a basis ``(U, V)`` (Saxe's setting):
            ``W_1 = R_1 diag(d) V^T``, ``W_i = R_i diag(d) R_{i-1}^T``, ``W_D = U diag(d) R_{D-1}^T``
            with random orthogonal ``R_i`` and ``d = a0^(1/D)``, so ``W = U diag(a0) V^T`` with
            ``a0 = g (1 + 0.1 u)``, ``u ~ U[0, 1)`` sorted descending (distinct mode values).
        init_scale: g, a float or one per member.
        bases: for ``init="aligned"``, one ``(U, V)`` pair of (N, N) orthogonal matrices per member.

    Example::

        >>> net = DeepMatrixFactorization(size=4, depth=3, seeds=[0, 1])
        >>> tuple(net().shape)
        (2, 4, 4)
    """

    def __init__(
        self,
        size: int,
        depth: int,
        seeds: Sequence[int] = (0,),
        init: str = "gaussian",
        init_scale=1e-3,
        dtype=torch.float32,
        bases=None,
    ):
        super().__init__()
        if depth < 1:
            raise ValueError(f"Expected `depth` >= 1, got {depth}")
        if init not in ("gaussian", "balanced", "aligned"):
            raise ValueError(f"Expected `init` in ('gaussian', 'balanced', 'aligned'), got {init!r}")
        if init == "aligned" and bases is None:
            raise ValueError("Expected `bases` (one (U, V) pair per member) with init='aligned', got None")
        self.size, self.depth, self.init = size, depth, init
        seeds = list(seeds)
        scales = _as_list(init_scale, len(seeds), "init_scale")
        member_bases = _as_list(bases, len(seeds), "bases") if init == "aligned" else [None] * len(seeds)
        layers = [torch.empty(len(seeds), size, size, dtype=torch.float64) for _ in range(depth)]
        for e, (seed, g, basis) in enumerate(zip(seeds, scales, member_bases)):
            for i, w in enumerate(self.init_member(size, depth, seed, init, g, basis)):
                layers[i][e] = w
        self.factors = nn.ParameterList([nn.Parameter(w.to(dtype)) for w in layers])

    @staticmethod
    def init_member(size: int, depth: int, seed: int, init: str, init_scale: float, basis=None) -> list[torch.Tensor]:
        """The factors of one member (float64), from the seed's ``init`` stream."""
        gen = stream_generator(seed, "init")
        gain = init_scale ** (1.0 / depth)
        if init == "aligned":
            return DeepMatrixFactorization.aligned_member(size, depth, gen, init_scale, basis)
        out = []
        for _ in range(depth):
            if init == "gaussian":
                out.append(torch.randn(size, size, generator=gen, dtype=torch.float64) * (gain / size**0.5))
            else:
                out.append(gain * random_orthogonal(size, gen))
        return out

    @staticmethod
    def aligned_member(size: int, depth: int, gen: torch.Generator, init_scale: float, basis) -> list[torch.Tensor]:
        """Balanced factors with ``W_D ... W_1 = U diag(a0) V^T`` (see the class docstring).

        >>> u, v = torch.eye(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64)
        >>> fs = DeepMatrixFactorization.aligned_member(3, 2, torch.Generator().manual_seed(0), 0.01, (u, v))
        >>> w = fs[1] @ fs[0]
        >>> bool(torch.allclose(w, torch.diag(torch.diagonal(w)))), bool((torch.diagonal(w) >= 0.01).all())
        (True, True)
        """
        u, v = (torch.as_tensor(b, dtype=torch.float64) for b in basis)
        if tuple(u.shape) != (size, size) or tuple(v.shape) != (size, size):
            raise ValueError(
                f"Expected a basis (U, V) of two ({size}, {size}) matrices, got {tuple(u.shape)} and {tuple(v.shape)}"
            )
        a0 = (
            (init_scale * (1 + 0.1 * torch.rand(size, generator=gen, dtype=torch.float64))).sort(descending=True).values
        )
        d = torch.diag(a0 ** (1.0 / depth))
        rs = [random_orthogonal(size, gen) for _ in range(depth - 1)]
        left = [*rs, u]  # W_i = left_i diag(d) right_i^T
        right = [v, *rs]
        return [left[i] @ d @ right[i].T for i in range(depth)]

    @property
    def n_members(self) -> int:
        return self.factors[0].shape[0]

    def product(self, members: slice | torch.Tensor = slice(None)) -> torch.Tensor:
        """End-to-end matrices of the selected members (a slice or an index tensor)."""
        if isinstance(members, slice) and members == slice(None):
            return product(list(self.factors))
        return product([f[members] for f in self.factors])

    def forward(self) -> torch.Tensor:
        return product(list(self.factors))
