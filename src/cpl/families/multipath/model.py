"""Multi-pathway deep network (paper Sec. 3): ``y_hat = sum_P f_P(x)``, each pathway D maps ``W_D s(... s(W_1 x))``.

With the default ``nonlinearity="identity"`` a pathway is the deep linear map ``W_P = W_D ... W_1``
(the paper); ``"relu"`` or ``"tanh"`` puts that function between consecutive layers (the paper's
public code's nonlinear variant), never after the last one.

Every parameter has a leading member dimension E, like :class:`cpl.families.matcomp.model.DeepMatrixFactorization`.
Inputs are columns: ``x`` has shape ``(E, in, B)`` and a pathway returns ``(E, out, B)``, so
feeding ``x = I`` returns the pathway's end-to-end map. Each pathway is a named submodule
(``net.pathways["a"]``), so forward hooks (gating deficits, lesions) can act on it.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from ...core.linalg import product
from ...core.rng import random_orthogonal, stream_generator

__all__ = ["LinearPathway", "MultiPathwayNet", "svd_init_gains", "NONLINEARITIES"]

#: name -> the function applied between consecutive layers of a pathway (None: none, a linear pathway)
NONLINEARITIES = {"identity": None, "relu": torch.relu, "tanh": torch.tanh}


def svd_init_gains(n_modes: int, depth: int, seed: int, eps: float = 0.01, noise: float = 0.1) -> torch.Tensor:
    """The per-mode diagonal ``d = (eps * (1 + noise * z))**(1/D)``, ``z ~ N(0, 1)``, sorted descending (float64).

    >>> d = svd_init_gains(4, depth=2, seed=0, noise=0.0)
    >>> [round(float(x), 6) for x in d]
    [0.1, 0.1, 0.1, 0.1]
    """
    z = torch.randn(n_modes, generator=stream_generator(seed, "multipath_init_noise"), dtype=torch.float64)
    d = (eps * (1 + noise * z)).clamp_min(1e-12) ** (1.0 / depth)
    return torch.sort(d, descending=True).values


class LinearPathway(nn.Module):
    """One pathway: ``W = W_D ... W_1`` with ``W_1: (E, h, in)``, ``W_i: (E, h, h)``, ``W_D: (E, out, h)``.

    Args:
        factors: the initial layer matrices, first applied first, each ``(E, rows, cols)``.
        nonlinearity: ``"identity"`` (a deep linear pathway), ``"relu"`` or ``"tanh"`` between layers.

    Raises:
        ValueError: an unknown ``nonlinearity``.
    """

    def __init__(self, factors: Sequence[torch.Tensor], nonlinearity: str = "identity"):
        super().__init__()
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"Expected `nonlinearity` in {tuple(NONLINEARITIES)}, got {nonlinearity!r}")
        self.factors = nn.ParameterList([nn.Parameter(f) for f in factors])
        self.nonlinearity = nonlinearity
        self._act = NONLINEARITIES[nonlinearity]

    @property
    def depth(self) -> int:
        return len(self.factors)

    def weight(self) -> torch.Tensor:
        """The raw end-to-end map ``(E, out, in)`` from the parameters (bypasses forward hooks).

        Raises:
            ValueError: a nonlinear pathway (it has no single matrix; feed it inputs instead).
        """
        if self._act is not None:
            raise ValueError(f"A pathway with nonlinearity={self.nonlinearity!r} has no end-to-end matrix")
        return product(list(self.factors))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.factors) - 1
        for i, f in enumerate(self.factors):
            x = torch.matmul(f, x)
            if self._act is not None and i < last:
                x = self._act(x)
        return x


class MultiPathwayNet(nn.Module):
    """Several linear pathways of equal depth and width whose outputs are summed, no bias.

    Args:
        in_dim: input size (items).
        out_dim: output size (features).
        depth: D >= 1 layers per pathway.
        width: hidden width h (paper: 100).
        pathways: pathway names (at least one; the paper uses ``("a", "b")``).
        seeds: one seed per member; ``len(seeds)`` is E.
        init: ``"svd"``: the paper's balanced init in the task basis, ``W_1 = R diag(d) V^T``,
            ``W_i = R diag(d) R^T``, ``W_D = U diag(d) R^T`` (R: random orthogonal h x h per pathway,
            restricted to its first k columns; U, V: the task's k singular vectors;
            ``d = svd_init_gains(k, D, seed, init_scale, init_noise)``, the same d in every pathway), so
            every layer is balanced and each mode follows the scalar ODE exactly; or ``"gaussian"``:
            iid ``N(0, (init_scale**(1/D) / sqrt(fan_in))**2)`` entries.
        init_scale: eps of the svd init (per-mode strength ~ eps), or g of the Gaussian init.
        init_noise: relative noise of the svd init's diagonal.
        basis: ``(U, V)`` float tensors ``(out, k)`` and ``(in, k)``; required for ``init="svd"``.
        dtype: parameter dtype.
        nonlinearity: ``"identity"`` (default: deep linear pathways), ``"relu"`` or ``"tanh"``
            between consecutive layers of every pathway (the same init).

    Raises:
        ValueError: a bad size, an unknown init or nonlinearity, duplicate pathway names, a missing or
            misshaped basis.

    Example::

        >>> net = MultiPathwayNet(in_dim=8, out_dim=15, depth=3, width=10, init="gaussian", seeds=[0, 1])
        >>> tuple(net(torch.eye(8).expand(2, 8, 8)).shape), list(net.pathways)
        ((2, 15, 8), ['a', 'b'])
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        depth: int,
        width: int = 100,
        pathways: Sequence[str] = ("a", "b"),
        seeds: Sequence[int] = (0,),
        init: str = "svd",
        init_scale: float = 0.01,
        init_noise: float = 0.1,
        basis: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
        dtype=torch.float32,
        nonlinearity: str = "identity",
    ):
        super().__init__()
        for name, value in (("in_dim", in_dim), ("out_dim", out_dim), ("depth", depth), ("width", width)):
            if value < 1:
                raise ValueError(f"Expected `{name}` >= 1, got {value}")
        choices = (("init", init, ("svd", "gaussian")), ("nonlinearity", nonlinearity, NONLINEARITIES))
        for name, value, allowed in choices:
            if value not in allowed:
                raise ValueError(f"Expected `{name}` in {tuple(allowed)}, got {value!r}")
        if init_scale <= 0:
            raise ValueError(f"Expected `init_scale` > 0, got {init_scale}")
        names = list(pathways)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"Expected one or more distinct `pathways` names, got {names}")
        seeds = list(seeds)
        if not seeds:
            raise ValueError("Expected at least one seed in `seeds`, got none")
        if init == "svd":
            if basis is None:
                raise ValueError("init='svd' needs the task `basis` (U, V)")
            u, v = (b.to(torch.float64) for b in basis)
            if u.shape[0] != out_dim or v.shape[0] != in_dim or u.shape[1] != v.shape[1] or u.shape[1] > width:
                raise ValueError(
                    f"Expected `basis` U (out_dim={out_dim}, k) and V (in_dim={in_dim}, k) with k <= width={width}, "
                    f"got {tuple(u.shape)} and {tuple(v.shape)}"
                )
        self.in_dim, self.out_dim, self.depth, self.width = in_dim, out_dim, depth, width
        self.init, self.init_scale, self.init_noise, self.nonlinearity = init, init_scale, init_noise, nonlinearity
        shapes = [(width if i < depth - 1 else out_dim, in_dim if i == 0 else width) for i in range(depth)]
        per_path = {name: [torch.empty(len(seeds), *shp, dtype=torch.float64) for shp in shapes] for name in names}
        for e, seed in enumerate(seeds):
            d = svd_init_gains(u.shape[1], depth, seed, init_scale, init_noise) if init == "svd" else None
            for name in names:
                gen = stream_generator(seed, f"multipath_init_{name}")
                if init == "svd":
                    r = random_orthogonal(width, gen)[:, : u.shape[1]]
                    for i in range(depth):  # W_1 = R d V^T, W_i = R d R^T, W_D = U d R^T
                        per_path[name][i][e] = (u if i == depth - 1 else r) @ torch.diag(d) @ (v if i == 0 else r).T
                else:
                    gain = init_scale ** (1.0 / depth)
                    for i, shp in enumerate(shapes):
                        per_path[name][i][e] = torch.randn(*shp, generator=gen, dtype=torch.float64) * (
                            gain / shp[1] ** 0.5
                        )
        paths = {name: LinearPathway([w.to(dtype) for w in per_path[name]], nonlinearity) for name in names}
        self.pathways = nn.ModuleDict(paths)

    @property
    def n_members(self) -> int:
        return next(iter(self.pathways.values())).factors[0].shape[0]

    @property
    def pathway_names(self) -> list[str]:
        return list(self.pathways)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = None
        for path in self.pathways.values():
            y = path(x)
            out = y if out is None else out + y
        return out
