"""Seeded random streams: every draw comes from its own stream, derived from ``(seed, stream name)``.

Changing one setting (a rank, an observation count) leaves the other draws unchanged, which is
what lets cells of a sweep that differ only in onset share data and init exactly.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

__all__ = ["stream_generator", "random_orthogonal"]


def stream_generator(seed: int, stream: str) -> torch.Generator:
    """A ``torch.Generator`` for the named random stream of ``seed`` (independent across names)."""
    state = np.random.SeedSequence([int(seed), zlib.crc32(stream.encode())]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def random_orthogonal(size: int, generator: torch.Generator) -> torch.Tensor:
    """A Haar-random orthogonal ``size x size`` matrix (float64): QR of a Gaussian, signs fixed.

    >>> q = random_orthogonal(4, torch.Generator().manual_seed(0))
    >>> bool(torch.allclose(q.T @ q, torch.eye(4, dtype=torch.float64)))
    True
    """
    q, r = torch.linalg.qr(torch.randn(size, size, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))
