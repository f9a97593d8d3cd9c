"""cpl.core.gemm: the step's products on numpy's OpenBLAS give the same training as torch's and
autograd's, the path is really taken, OpenBLAS runs one thread inside and gets its threads back."""

import numpy as np
import pytest
import torch

from conftest import small_matcomp
from cpl.callbacks import TaskSwitch
from cpl.core import gemm
from cpl.families.matcomp.experiment import build_module
from reference import plain_matcomp_gd
from test_matcomp_module import RecordW, fit


@pytest.fixture
def backend(monkeypatch):
    """Set ``CPL_CPU_GEMM`` and torch's threads for one test; both restored after."""
    threads = torch.get_num_threads()

    def use(name: str, torch_threads: int = 1):
        monkeypatch.setenv(gemm.ENV, name)
        gemm.cpu_backend.cache_clear()
        torch.set_num_threads(torch_threads)

    yield use
    torch.set_num_threads(threads)
    monkeypatch.delenv(gemm.ENV, raising=False)
    gemm.cpu_backend.cache_clear()


@pytest.fixture
def matmul_calls(monkeypatch):
    """Count the products numpy computes for cpl.core.gemm."""
    calls = []
    real = np.matmul

    def counting(a, b, *args, **kwargs):
        calls.append(a.shape)
        return real(a, b, *args, **kwargs)

    monkeypatch.setattr(gemm.np, "matmul", counting)
    return calls


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
def test_numpy_products_give_autograds_gradient_and_the_same_fused_step(tmp_path, backend, matmul_calls, depth):
    backend("numpy")
    cfgs = [
        small_matcomp(tmp_path, seed=s, model={"depth": depth, "init_scale": 0.5}, trainer={"dtype": "float64"})
        for s in range(3)
    ]
    closed, auto, fused = build_module(cfgs), build_module(cfgs), build_module(cfgs)
    for m in (closed, auto, fused):
        m.set_member_schedule([0, 0, 0], [10, 10, 0], [None, None, None])  # member 2 inactive
        m._select(0)
    with gemm.step_products() as on:
        assert on
        loss = closed.backward_step()
        before = [p.detach().clone() for p in fused.model.factors]
        fused_loss = fused.sgd_step(0.3)
    assert len(matmul_calls) == 2 * 3 * (depth - 1)  # every product of both steps went to numpy
    ref = auto.loss()  # autograd, torch's products
    ref.backward()
    assert float(loss) == pytest.approx(float(ref), rel=1e-12)
    assert float(fused_loss) == pytest.approx(float(ref), rel=1e-12)
    for c, a, f, b in zip(closed.model.factors, auto.model.factors, fused.model.factors, before):
        torch.testing.assert_close(c.grad[:2], a.grad[:2], rtol=1e-10, atol=1e-14)
        expected = b.clone()
        expected[:2] -= 0.3 * a.grad[:2]
        torch.testing.assert_close(f.detach(), expected, rtol=1e-10, atol=1e-14)


def test_a_run_on_numpy_products_follows_plain_gradient_descent(tmp_path, backend, matmul_calls):
    """A whole fit (chunks of steps, the task switch) with torch on one thread and numpy's products."""
    backend("numpy")
    cfg = small_matcomp(tmp_path, trainer={"dtype": "float64"})
    module = build_module([cfg])
    init = [f[0].detach().clone() for f in module.model.factors]
    rec = RecordW()
    fit(module, [TaskSwitch(cfg.switch.at_step), rec])
    assert len(matmul_calls) >= 60 * 3 * (cfg.model.depth - 1)
    t = module.targets
    ref = plain_matcomp_gd(
        init, t[0, 0], module.masks[0, 0], t[1, 0], module.masks[1, 0], cfg.optim.lr, cfg.switch.at_step, 60
    )
    for step in (1, 30, 31, 60):
        np.testing.assert_allclose(rec.ws[step][0], ref[step], rtol=1e-9, atol=1e-12)


def test_float32_runs_on_either_backend_agree_to_rounding(tmp_path, backend):
    ws = []
    for name in ("torch", "numpy"):
        backend(name)
        cfg = small_matcomp(tmp_path)
        module = build_module([cfg])
        fit(module, [TaskSwitch(cfg.switch.at_step)])
        ws.append(module.end_to_end())
    assert ws[0].dtype == torch.float32
    torch.testing.assert_close(ws[0], ws[1], rtol=1e-5, atol=1e-6)


def test_numpy_products_only_with_one_torch_thread_and_never_on_torch(backend, matmul_calls):
    a = torch.randn(2, 5, 5)
    backend("numpy", torch_threads=2)  # MKL's threaded products are as fast: torch keeps them
    with gemm.step_products() as on:
        assert not on
        torch.testing.assert_close(gemm.bmm(a, a), torch.bmm(a, a))
    backend("torch")
    with gemm.step_products() as on:
        assert not on
        gemm.bmm(a, a)
    assert matmul_calls == []
    backend("numpy")
    with gemm.step_products() as on:
        assert on
        torch.testing.assert_close(gemm.bmm(a, a), torch.bmm(a, a))
        c = a.clone()
        gemm.baddbmm_(c, a, a.mT, alpha=-0.5)
        torch.testing.assert_close(c, a.baddbmm(a, a.mT, alpha=-0.5))
        with gemm.step_products() as inner:  # nested: still numpy
            assert inner
    assert len(matmul_calls) == 2
    gemm.bmm(a, a)  # outside the block: torch's
    assert len(matmul_calls) == 2


def test_openblas_runs_one_thread_inside_and_gets_its_threads_back(backend):
    backend("numpy")
    lib = gemm._numpy_openblas()
    if not lib:
        pytest.skip("numpy here does not use OpenBLAS")
    previous = lib.get_num_threads()
    try:
        lib.set_num_threads(2)
        with gemm.step_products():
            assert lib.get_num_threads() == 1  # beside torch's threads, more spin: 40x slower steps
        assert lib.get_num_threads() == 2
        with pytest.raises(RuntimeError, match="boom"), gemm.step_products():
            raise RuntimeError("boom")
        assert lib.get_num_threads() == 2 and not gemm._state["numpy"]
    finally:
        lib.set_num_threads(previous)
    assert "openblas" in gemm.blas_kernels()


def test_a_bad_backend_name_is_refused(backend):
    backend("mkl")
    with pytest.raises(ValueError, match=r"CPL_CPU_GEMM='mkl': expected one of torch, numpy"):
        gemm.cpu_backend()


def test_cpu_vendor_and_flags_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 fma avx512f\n\n"
        "processor\t: 1\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu\n"
    )
    vendor, flags = gemm.cpu_vendor_and_flags.__wrapped__(str(info))
    assert vendor == "AuthenticAMD" and {"avx2", "avx512f"} <= flags and "sse" not in flags
    assert gemm.choose_backend(vendor, flags, True, "scipy-openblas") == "numpy"
    assert gemm.choose_backend(vendor, flags, False, "scipy-openblas") == "torch"  # no MKL to avoid
    assert gemm.choose_backend(vendor, flags, True, "mkl") == "torch"
    assert gemm.cpu_vendor_and_flags.__wrapped__(str(tmp_path / "missing")) == ("", frozenset())
