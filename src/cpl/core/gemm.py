"""The batched matrix products of a training step, on the faster of the two CPU GEMMs at hand.

torch multiplies CPU tensors with Intel MKL, numpy with OpenBLAS. On Intel processors cpl keeps
torch's. On other x86 processors MKL runs its AVX2 kernels, and numpy's OpenBLAS is faster. Measured
on an AMD EPYC (Zen 5, AVX-512), torch 2.13 and numpy 2.4, one thread, a depth-3 step of 100 x 100
factors per member: ~155 us with torch (MKL), ~80 us with numpy's OpenBLAS on the AVX-512 kernels it
picks for this processor, ~135 us on its AVX2 kernels (``OPENBLAS_CORETYPE=Haswell``, which some
machines set). A 100 x 100 float32 product: 78, 194 and 94 GFLOP/s.

:func:`cpu_backend` makes the choice once per process, from the processor's vendor and the two
libraries' BLAS; ``CPL_CPU_GEMM=torch`` or ``=numpy`` overrides it (the choice changes results only
by float rounding). Only CPU float tensors take the numpy path; anything else (CUDA, other dtypes) is
torch's. numpy works on the tensors' memory (``Tensor.numpy()`` shares it): nothing is copied.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

import numpy as np
import torch

__all__ = [
    "ENV",
    "baddbmm_",
    "blas_kernels",
    "bmm",
    "choose_backend",
    "cpu_backend",
    "cpu_vendor_and_flags",
    "step_products",
]

#: environment variable that overrides :func:`cpu_backend` ("torch" or "numpy")
ENV = "CPL_CPU_GEMM"
_BACKENDS = ("torch", "numpy")


@lru_cache(maxsize=1)
def cpu_vendor_and_flags(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, frozenset[str]]:
    """``(vendor_id, flags)`` of the first processor in ``cpuinfo``; ``("", frozenset())`` where
    there is none (not Linux, or not x86)."""
    vendor, flags = "", frozenset()
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "vendor_id" and not vendor:
                    vendor = value.strip()
                elif key == "flags":
                    flags = frozenset(value.split())
                    break
    except OSError:
        pass
    return vendor, flags


def _numpy_blas() -> str:
    try:
        return str(np.__config__.CONFIG["Build Dependencies"]["blas"]["name"]).lower()
    except (AttributeError, KeyError, TypeError):  # numpy < 1.26 has no CONFIG
        return ""


def choose_backend(vendor: str, flags: frozenset[str], torch_has_mkl: bool, numpy_blas: str) -> str:
    """The rule of :func:`cpu_backend`: numpy's OpenBLAS on an x86 processor with AVX2 that Intel did
    not make, when torch multiplies with MKL; torch everywhere else.

    >>> choose_backend("AuthenticAMD", frozenset({"avx2", "fma"}), True, "scipy-openblas")
    'numpy'
    >>> choose_backend("GenuineIntel", frozenset({"avx2", "avx512f"}), True, "scipy-openblas")
    'torch'
    >>> choose_backend("", frozenset(), False, "accelerate")  # e.g. an ARM Mac
    'torch'
    """
    mkl_elsewhere = vendor not in ("", "GenuineIntel") and "avx2" in flags and torch_has_mkl
    return "numpy" if mkl_elsewhere and "openblas" in numpy_blas.lower() else "torch"


@lru_cache(maxsize=1)
def cpu_backend() -> str:
    """``"numpy"`` or ``"torch"``: :func:`choose_backend` on this machine, or ``$CPL_CPU_GEMM``."""
    choice = os.environ.get(ENV, "").strip().lower()
    if choice:
        if choice not in _BACKENDS:
            raise ValueError(f"{ENV}={os.environ[ENV]!r}: expected one of {', '.join(_BACKENDS)} (or unset)")
        return choice
    return choose_backend(*cpu_vendor_and_flags(), torch.backends.mkl.is_available(), _numpy_blas())


def blas_kernels() -> str:
    """What multiplies a sweep worker's step matrices here, for benchmark reports: ``"torch (mkl)"``
    or ``"numpy (openblas <version>, <kernels> kernels)"``."""
    if cpu_backend() == "torch" or not _numpy_openblas():
        return f"torch ({'mkl' if torch.backends.mkl.is_available() else 'its own BLAS'})"
    info = _numpy_openblas().info()
    return f"numpy (openblas {info.get('version', '?')}, {info.get('architecture', '?')} kernels)"


_state = {"numpy": False, "openblas": None}


def _numpy_openblas():
    """threadpoolctl's controller of numpy's own OpenBLAS (found once)."""
    if _state["openblas"] is None:
        from threadpoolctl import ThreadpoolController

        libs = ThreadpoolController().select(internal_api="openblas").lib_controllers
        numpy_libs = [c for c in libs if "numpy" in str(c.filepath)]
        _state["openblas"] = (numpy_libs or libs or [False])[0]
    return _state["openblas"]


@contextmanager
def step_products() -> Iterator[bool]:
    """Inside the block, :func:`bmm` and :func:`baddbmm_` multiply CPU float tensors with numpy's
    OpenBLAS, on one thread, where :func:`cpu_backend` says ``"numpy"`` and torch runs one thread
    (a sweep's workers). With more torch threads, MKL's threaded products are as fast for these
    sizes, so torch keeps them. Yields whether numpy multiplies. Nests; restores OpenBLAS's threads."""
    if _state["numpy"] or cpu_backend() != "numpy" or torch.get_num_threads() != 1 or not _numpy_openblas():
        yield _state["numpy"]
        return
    lib = _numpy_openblas()
    previous = lib.get_num_threads()
    if previous != 1:  # OpenBLAS threads beside torch's spin against each other: 40x slower steps
        lib.set_num_threads(1)
    _state["numpy"] = True
    try:
        yield True
    finally:
        _state["numpy"] = False
        if previous != 1:
            lib.set_num_threads(previous)


def _on_numpy(t: torch.Tensor) -> bool:
    return _state["numpy"] and t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)


def _array(t: torch.Tensor) -> np.ndarray:
    return (t.detach() if t.requires_grad else t).numpy()


def bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.bmm(a, b)`` (no autograd); on numpy's BLAS inside :func:`step_products` where it says so."""
    if _on_numpy(a):
        return torch.from_numpy(np.matmul(_array(a), _array(b)))
    return torch.bmm(a, b)


def baddbmm_(c: torch.Tensor, a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """``c += alpha * a @ b`` in place (``c.baddbmm_(a, b, alpha=alpha)``); on numpy's BLAS inside
    :func:`step_products` where it says so."""
    if _on_numpy(c):
        return c.add_(torch.from_numpy(np.matmul(_array(a), _array(b))), alpha=alpha)
    return c.baddbmm_(a, b, alpha=alpha)
