"""Benchmarks: the Lightning + MLflow run against a plain PyTorch loop doing the same work.

The plain loop does what the paper's code does, in one process: the same full-batch gradient
steps, the same finiteness check, the same test errors every ``log.every_n_steps`` and the same
singular-value readout every ``log.sv_every_n_steps``; it keeps results in Python lists.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import lightning as L
import torch
from omegaconf import DictConfig

from . import tracking
from .config import load_config, max_steps
from .core import gemm
from .run import build, train, train_group

__all__ = ["plain_matcomp_loop", "bench_train", "bench_sweep", "bench_users", "scaled_sweep_overrides"]


def plain_matcomp_loop(cfg: DictConfig) -> tuple[float, torch.Tensor]:
    """Run the config's gradient steps in a plain loop; return (seconds, final W)."""
    module = build(cfg).module  # only for the same init and tasks
    factors = [torch.nn.Parameter(f.detach().clone()) for f in module.model.factors]
    targets, masks = module.targets, module.masks
    weights = module.weights
    final_u, final_v = module.reference_basis(cfg.log.sv_top_k)
    opt = torch.optim.SGD(factors, lr=cfg.optim.lr)
    steps, at = max_steps(cfg), cfg.switch.at_step
    every, sv_every, k = cfg.log.every_n_steps, cfg.log.sv_every_n_steps, cfg.log.sv_top_k
    history: list = []

    def w_now():
        w = factors[0]
        for f in factors[1:]:
            w = f @ w
        return w

    def readout(step):
        with torch.no_grad():
            w = w_now()
            if step % every == 0 or step == steps:
                t = 0 if step < at else 1
                d2 = (w - targets[1]).pow(2)
                hidden = masks[1] == 0
                history.append(
                    (
                        "err",
                        step,
                        float(0.5 * ((w - targets[t]).pow(2) * weights[t]).sum()),
                        float(d2.mean()),
                        float(d2[hidden].mean()),
                        float((w - targets[t]).pow(2).mean()),
                        float((w - targets[t]).pow(2)[masks[t] == 0].mean()),
                    )
                )
            if step % sv_every == 0 or step == steps:
                s = torch.linalg.svdvals(w)
                proj = torch.einsum("eik,eij,ejk->ek", final_u, w, final_v)
                history.append(("sv", step, s[:, :k].tolist(), proj.tolist()))

    t0 = time.perf_counter()
    readout(0)
    for step in range(steps):
        t = 0 if step < at else 1
        opt.zero_grad(set_to_none=True)
        loss = 0.5 * ((w_now() - targets[t]).pow(2) * weights[t]).sum()
        loss.backward()
        opt.step()
        if not torch.isfinite(loss).item():
            raise RuntimeError("diverged")
        readout(step + 1)
    return time.perf_counter() - t0, w_now().detach()


class _FitTimer(L.Callback):
    def on_train_start(self, trainer, pl_module):
        self.t0 = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        self.seconds = time.perf_counter() - self.t0


@dataclass
class BenchRow:
    name: str
    seconds: float
    steps: int

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds


def bench_train(cfg: DictConfig, repeats: int = 3) -> dict[str, object]:
    """Time plain loop, Lightning without tracking and Lightning with MLflow, interleaved ``repeats`` times.

    Returns medians and the ratios (Lightning steps/s divided by plain steps/s).
    """
    steps = max_steps(cfg)
    rows: dict[str, list[float]] = {"plain": [], "lightning": [], "lightning+mlflow": []}
    write_s: list[float] = []
    max_diff = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            sec, w_plain = plain_matcomp_loop(cfg)
            rows["plain"].append(sec)
            for name, tracked in (("lightning", False), ("lightning+mlflow", True)):
                c = cfg.copy()
                c.tracking.enabled = tracked
                c.tracking.uri = f"sqlite:///{tmp}/bench.db"
                c.tracking.experiment = "bench"
                c.trainer.progress_bar = False
                c.trainer.checkpoint_dir = f"{tmp}/ckpt"
                c.log.figures = False
                timer = _FitTimer()
                exp = build(c)
                result = train(c, callbacks=[timer], experiment=exp)
                rows[name].append(timer.seconds)
                max_diff = max(max_diff, float((exp.module.end_to_end() - w_plain).abs().max()))
                if tracked:
                    write_s.append(result.logging_seconds)
    med = {k: statistics.median(v) for k, v in rows.items()}
    return {
        "steps": steps,
        "seconds": med,
        "steps_per_s": {k: steps / v for k, v in med.items()},
        "ratio_lightning": med["plain"] / med["lightning"],
        "ratio_lightning_mlflow": med["plain"] / med["lightning+mlflow"],
        "max_abs_weight_diff": max_diff,
        "mlflow_write_seconds": statistics.median(write_s),
        "mlflow_write_share": statistics.median(write_s) / med["lightning+mlflow"],
    }


PAPER_ONSETS = (0, 1000, 5000, 10000, 20000, 40000, 60000, 80000, 100000)


def onset_sweep_cells(
    scale: float = 0.1, overrides: list[str] | None = None, tmp: str | None = None
) -> list[DictConfig]:
    """The paper's onset sweep at depth 3 (Fig. 4 left, D = 3), every length scaled by ``scale``.

    Each cell records what the paper's code records: the test error at every step (a dense trace,
    saved as an artifact) and the top-10 singular values every 10 steps (kept for the figure; MLflow
    gets them, and the other metrics, every 100 steps).
    """

    cells = []
    for onset in PAPER_ONSETS:
        cfg = load_config(
            "matcomp_rank10to5",
            [
                f"switch.at_step={int(round(onset * scale))}",
                f"train.steps_after_switch={int(round(30000 * scale))}",
                "log.every_n_steps=100",
                "log.sv_every_n_steps=10",
                "log.sv_log_every_n_steps=100",
                "log.trace_every_n_steps=1",
                "trainer.progress_bar=false",
                "trainer.steps_per_call=10",
                *(overrides or []),
            ],
        )
        if tmp is not None:
            cfg.tracking.uri = f"sqlite:///{tmp}/bench_sweep.db"
            cfg.tracking.experiment = "bench-sweep"
            cfg.trainer.checkpoint_dir = f"{tmp}/ckpt"
        cells.append(cfg)
    return cells


def plain_onset_sweep(cells: list[DictConfig]) -> tuple[float, list[float]]:
    """The paper's way: each cell from scratch, one after another, with the test error every step
    and the top-10 singular values every 10 steps. Returns (seconds, final test error per cell)."""
    finals = []
    t0 = time.perf_counter()
    for cfg in cells:
        module = build(cfg).module  # the same init and tasks as the framework's cell
        factors = [torch.nn.Parameter(f.detach()[0].clone()) for f in module.model.factors]
        (pre_t, fin_t), (pre_w, fin_w) = module.targets[:, 0], module.weights[:, 0]
        opt = torch.optim.SGD(factors, lr=cfg.optim.lr)
        at, steps = cfg.switch.at_step, max_steps(cfg)
        errors, svs = [], []

        def w_now():
            w = factors[0]
            for f in factors[1:]:
                w = f @ w
            return w

        for step in range(steps):
            target, weight = (pre_t, pre_w) if step < at else (fin_t, fin_w)
            opt.zero_grad(set_to_none=True)
            loss = 0.5 * ((w_now() - target).pow(2) * weight).sum()
            loss.backward()
            opt.step()
            with torch.no_grad():
                w = w_now()
                errors.append(float((w - fin_t).pow(2).mean()))
                if (step + 1) % 10 == 0:
                    svs.append(torch.linalg.svdvals(w)[:10].tolist())
        finals.append(errors[-1])
    return time.perf_counter() - t0, finals


def bench_sweep(scale: float = 0.1, repeats: int = 1, overrides: list[str] | None = None) -> dict[str, object]:
    """Wall-clock of the batched, trunk-sharing sweep (MLflow on) against the paper's plain loop.

    After an untimed warm-up of both at a tiny scale, the two alternate ``repeats`` times in this
    process (a fresh tracking store each time); the
    speedup is the ratio of the median times, and every repeat's ratio is returned too (shared
    machines vary by tens of percent from one minute to the next). ``overrides`` (dotlist) change
    every cell, e.g. ``["model.init_scale=0.1"]``.
    """

    plain_times, ours_times, logging_times = [], [], []
    # untimed warm-up of both (imports, first-use kernels, matplotlib): costs of a process, not of a sweep
    with tempfile.TemporaryDirectory() as tmp:
        tiny = onset_sweep_cells(0.002, overrides, tmp=tmp)
        plain_onset_sweep(tiny)
        train_group(tiny)
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            cells = onset_sweep_cells(scale, overrides, tmp=tmp)
            plain_s, plain_final = plain_onset_sweep(cells)
            # the store's one-time creation (schema migrations, seconds) is not part of a sweep's cost
            tracking.get_or_create_experiment(tracking.get_client(cells[0].tracking.uri), cells[0].tracking.experiment)
            t0 = time.perf_counter()
            results = train_group(cells)
            ours_s = time.perf_counter() - t0
        plain_times.append(plain_s)
        ours_times.append(ours_s)
        logging_times.append(sum(r.logging_seconds for r in results))
    ours_final = [r.metrics["test/final_error"] for r in results]
    plain_med, ours_med = statistics.median(plain_times), statistics.median(ours_times)
    return {
        "cells": len(cells),
        "onsets": [c.switch.at_step for c in cells],
        "repeats": repeats,
        "plain_seconds": plain_med,
        "framework_seconds": ours_med,
        "speedup": plain_med / ours_med,
        "speedups": [p / o for p, o in zip(plain_times, ours_times)],
        "plain_times": plain_times,
        "framework_times": ours_times,
        "plain_final": plain_final,
        "framework_final": ours_final,
        "max_final_diff": max(abs(a - b) for a, b in zip(plain_final, ours_final)),
        "mlflow_write_seconds": statistics.median(logging_times),
    }


def scaled_sweep_overrides(conf: str, scale: float = 1.0, subset: Sequence[str] = ()) -> list[str]:
    """Command-line overrides that shorten a paper onset sweep by ``scale`` (onsets and the steps
    after the switch; none at scale 1) and restrict it to ``subset`` (``KEY=[v,...]`` grid values)."""
    from .sweep import load_sweep

    out = [f"sweep.grid.{s}" for s in subset]
    if scale != 1:
        sweep = load_sweep(conf, out)
        key = sweep.settings.onset_key
        onsets = sorted({int(round(int(c.values[key]) * scale)) for c in sweep.cells})
        after = int(round(sweep.base.train.steps_after_switch * scale))
        out += [f"sweep.grid.{key}=[{','.join(map(str, onsets))}]", f"train.steps_after_switch={after}"]
    return out


def _tree_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20 if path.exists() else 0.0


def _store_numbers(root: Path) -> dict[str, float]:
    """Size and contents of a sweep's store under ``root`` (the default ``mlruns/`` and ``checkpoints/``)."""
    db = root / "mlruns" / "mlflow.db"
    with sqlite3.connect(db) as con:
        rows = con.execute("select count(*) from metrics").fetchone()[0]
        finals = con.execute(
            "select r.run_uuid, t.value, m.value from runs r join tags t on t.run_uuid = r.run_uuid "
            "and t.key = 'cpl.sweep.cell' join latest_metrics m on m.run_uuid = r.run_uuid "
            "and m.key = 'test/final_error' where r.status = 'FINISHED'"
        ).fetchall()
    return {
        "store_mb": db.stat().st_size / 2**20,
        "metric_rows": rows,
        "artifacts_mb": _tree_mb(root / "mlruns") - db.stat().st_size / 2**20,
        "checkpoints_mb": _tree_mb(root / "checkpoints"),
        "finals": {int(cell): value for _, cell, value in finals},
    }


def bench_users(conf: str = "matcomp_depth_sweep", scale: float = 1.0, subset: Sequence[str] = ()) -> dict:
    """The paper sweep ``conf`` run exactly as users run it, ``python scripts/sweep.py conf=NAME``
    (a fresh process in an empty folder, so MLflow writes to its default SQLite store
    ``mlruns/mlflow.db`` there, checkpoints to ``checkpoints/``), against the paper-style plain loop
    (:func:`plain_onset_sweep`: each cell from scratch, test error every step, top-10 singular values
    every 10 steps) on the same grid, with the sweep's torch threads. ``scale`` < 1 or ``subset``
    add the overrides of :func:`scaled_sweep_overrides` (a quick check; 1 and none = the conf unmodified).
    """
    from .sweep import load_sweep

    overrides = scaled_sweep_overrides(conf, scale, subset)
    sweep = load_sweep(conf, overrides)
    script = Path(__file__).resolve().parents[2] / "scripts" / "sweep.py"
    if not script.exists():  # an installed package: the same entry point as scripts/sweep.py
        script = Path("-c")
    entry = "import sys; from cpl.cli import sweep_main; sys.exit(sweep_main(sys.argv[1:]))"
    command = [sys.executable, str(script), *([entry] if str(script) == "-c" else []), f"conf={conf}", *overrides]
    with tempfile.TemporaryDirectory(prefix="cpl-bench-users-") as tmp:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the default store
        t0 = time.perf_counter()
        proc = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True)
        users_s = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"the sweep failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        numbers = _store_numbers(Path(tmp))
    threads = torch.get_num_threads()
    torch.set_num_threads(sweep.settings.torch_threads or threads)
    try:
        plain_s, plain_final = plain_onset_sweep([c.config for c in sweep.cells])
    finally:
        torch.set_num_threads(threads)
    finals = numbers.pop("finals")
    rel = [abs(finals[c.index] - p) / max(abs(p), 1e-12) for c, p in zip(sweep.cells, plain_final) if c.index in finals]
    return {
        "conf": conf,
        "overrides": overrides,
        "cells": len(sweep.cells),
        "member_steps": sum(max_steps(c.config) for c in sweep.cells),
        "users_seconds": users_s,
        "plain_seconds": plain_s,
        "speedup": plain_s / users_s,
        "torch_threads": sweep.settings.torch_threads,
        "step_products": gemm.blas_kernels() if sweep.settings.torch_threads == 1 else "torch",
        "max_rel_final_diff": max(rel) if rel else float("nan"),
        "finished_cells": len(finals),
        **numbers,
    }
