"""Matrix-completion data: seeded low-rank ground truths and observation sets (docs/paper-setup.md part A).

Every random draw comes from its own stream, derived from ``(seed, stream name)``, so that
changing one setting (a rank, an observation count) leaves the other draws unchanged. This is
what lets cells of a sweep that differ only in onset share data and init exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...core.rng import random_orthogonal, stream_generator

__all__ = [
    "low_rank_matrix",
    "shared_basis_targets",
    "observation_order",
    "mask_from_indices",
    "MatCompTasks",
    "make_matcomp_tasks",
]


def low_rank_matrix(size: int, rank: int, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """The paper's ground truth: ``A B^T / sqrt(r)`` with iid N(0,1) ``A, B``, rescaled to ``||M||_F = N``.

    >>> M = low_rank_matrix(20, 3, torch.Generator().manual_seed(0))
    >>> int(torch.linalg.matrix_rank(M)), round(float(M.norm()), 6)
    (3, 20.0)
    """
    a = torch.randn(size, rank, generator=generator, dtype=torch.float64)
    b = torch.randn(size, rank, generator=generator, dtype=torch.float64)
    m = a @ b.T / rank**0.5
    return (m * (size / m.norm())).to(dtype)


def shared_basis_targets(
    size: int, pretrain_rank: int, final_rank: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two targets with the same singular vectors (paper Fig. 10), float64, each with ``||M||_F = N``.

    ``U, V`` are Haar-random orthogonal (stream ``shared_basis``). The pre-training target is
    ``U_r1 diag(s1) V_r1^T`` and the final one ``U_r2 diag(reversed(s2)) V_r2^T`` on the first
    columns, where ``s1``, ``s2`` are the singular values of :func:`low_rank_matrix` draws of rank
    r1, r2 (streams ``pretrain_task``, ``final_task``): the final task re-orders the modes.

    >>> pre, fin = shared_basis_targets(6, 3, 2, seed=0)
    >>> u, s, vt = torch.linalg.svd(pre)
    >>> m = u[:, :3].T @ fin @ vt[:3].T
    >>> round(float(fin.norm()), 6), bool(torch.allclose(m, torch.diag(torch.diagonal(m)), atol=1e-12))
    (6.0, True)
    """
    gen = stream_generator(seed, "shared_basis")
    u, v = random_orthogonal(size, gen), random_orthogonal(size, gen)
    s1 = torch.linalg.svdvals(low_rank_matrix(size, pretrain_rank, stream_generator(seed, "pretrain_task")))[
        :pretrain_rank
    ]
    s2 = torch.linalg.svdvals(low_rank_matrix(size, final_rank, stream_generator(seed, "final_task")))[
        :final_rank
    ].flip(0)
    pre = u[:, :pretrain_rank] @ torch.diag(s1) @ v[:, :pretrain_rank].T
    fin = u[:, :final_rank] @ torch.diag(s2) @ v[:, :final_rank].T
    return pre, fin


def observation_order(size: int, generator: torch.Generator) -> torch.Tensor:
    """A uniformly random order of the ``size**2`` entries; the first ``n`` are the observed ones."""
    return torch.randperm(size * size, generator=generator)


def mask_from_indices(size: int, indices: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    mask = torch.zeros(size * size, dtype=dtype)
    mask[indices] = 1
    return mask.view(size, size)


@dataclass
class MatCompTasks:
    """The two tasks of one member: targets and 0/1 observation masks (N x N each)."""

    pretrain_target: torch.Tensor
    pretrain_mask: torch.Tensor
    final_target: torch.Tensor
    final_mask: torch.Tensor

    def as_dict(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {"pretrain": (self.pretrain_target, self.pretrain_mask), "final": (self.final_target, self.final_mask)}


def make_matcomp_tasks(
    size: int,
    pretrain_rank: int,
    final_rank: int,
    n_obs: int,
    seed: int,
    pretrain_n_obs: int | None = None,
    pretrain_task: str = "independent",
    dtype=torch.float32,
    shared_basis: bool = False,
) -> MatCompTasks:
    """Build the pre-training and final tasks of docs/paper-setup.md part A for one seed.

    Both observation sets are prefixes of one random order of the entries: with equal counts
    they are the same locations, otherwise the smaller set is inside the larger one. With
    ``shared_basis`` the two targets come from :func:`shared_basis_targets` (paper Fig. 10).
    """
    shared = shared_basis_targets(size, pretrain_rank, final_rank, seed) if shared_basis else None
    final = shared[1] if shared else low_rank_matrix(size, final_rank, stream_generator(seed, "final_task"))
    if pretrain_task == "same":
        pre = final.clone()
    elif pretrain_task == "independent":
        pre = shared[0] if shared else low_rank_matrix(size, pretrain_rank, stream_generator(seed, "pretrain_task"))
    else:
        raise ValueError(f"Expected `pretrain_task` in ('independent', 'same'), got {pretrain_task!r}")
    order = observation_order(size, stream_generator(seed, "observations"))
    k_pre = n_obs if pretrain_n_obs is None else pretrain_n_obs
    return MatCompTasks(
        pretrain_target=pre.to(dtype),
        pretrain_mask=mask_from_indices(size, order[:k_pre], dtype),
        final_target=final.to(dtype),
        final_mask=mask_from_indices(size, order[:n_obs], dtype),
    )
