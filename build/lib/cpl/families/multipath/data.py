"""The hierarchical task of the two-pathway experiments (paper Sec. 3, docs/paper-setup.md part B).

``2**levels`` items (one-hot inputs, ``X = I``) and one output feature per node of a complete
binary tree over the items (``2**(levels+1) - 1`` nodes: 1 root, 2, 4, ..., the leaves). Feature
``f`` of item ``i`` is 1 if item ``i`` lies below node ``f``. With ``X = I`` the network's map
``W`` (features x items) is trained towards ``Y^T`` (features x items) = ``U diag(s) V^T``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["HierarchicalTask", "hierarchical_targets", "hierarchical_task"]


def hierarchical_targets(levels: int = 3, dtype=torch.float64) -> torch.Tensor:
    """``Y^T``: the ``(2**(levels+1)-1, 2**levels)`` feature-by-item matrix of the binary tree.

    Rows are nodes in breadth-first order (root first, leaves last).

    Raises:
        ValueError: ``levels`` < 0.

    Example::

        >>> hierarchical_targets(1)
        tensor([[1., 1.],
                [1., 0.],
                [0., 1.]], dtype=torch.float64)
    """
    if levels < 0:
        raise ValueError(f"Expected `levels` >= 0, got {levels}")
    n = 2**levels
    rows = []
    for depth in range(levels + 1):
        size = n // 2**depth
        for node in range(2**depth):
            row = torch.zeros(n, dtype=dtype)
            row[node * size : (node + 1) * size] = 1
            rows.append(row)
    return torch.stack(rows)


@dataclass
class HierarchicalTask:
    """Target ``Y^T`` (features x items) and its compact SVD ``U diag(s) V^T`` (float64).

    ``s`` is descending; the task has ``k = n_items`` modes (``U``: features x k, ``V``: items x k).
    Under the loss ``1/2 * sum_items ||y - y_hat||^2`` with ``X = I``, ``s`` are exactly the mode
    values of docs/theory.md section 1.
    """

    targets: torch.Tensor
    u: torch.Tensor
    s: torch.Tensor
    v: torch.Tensor

    @property
    def n_items(self) -> int:
        return self.targets.shape[1]

    @property
    def n_features(self) -> int:
        return self.targets.shape[0]

    @property
    def n_modes(self) -> int:
        return self.s.shape[0]


def hierarchical_task(levels: int = 3) -> HierarchicalTask:
    """The hierarchical task and its SVD; signs fixed so that ``U^T Y^T V = diag(s)`` with ``s >= 0``.

    For 8 items the singular values are ``sqrt(15), sqrt(7), sqrt(3) (x2), 1 (x4)``.

    Example::

        >>> t = hierarchical_task(3)
        >>> (t.n_features, t.n_items, t.n_modes)
        (15, 8, 8)
        >>> [round(float(x) ** 2, 6) for x in t.s]
        [15.0, 7.0, 3.0, 3.0, 1.0, 1.0, 1.0, 1.0]
    """
    y = hierarchical_targets(levels)
    u, s, vh = torch.linalg.svd(y, full_matrices=False)
    v = vh.mT
    # a deterministic sign: the largest-magnitude entry of every column of V is positive
    idx = v.abs().argmax(dim=0)
    sign = torch.sign(v[idx, torch.arange(v.shape[1])])
    sign[sign == 0] = 1
    return HierarchicalTask(targets=y, u=u * sign, s=s, v=v * sign)
