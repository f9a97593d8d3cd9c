"""Running the jobs of a reproduction through the public entry points: :func:`cpl.sweep.run_sweep`
for every sweep (so a second invocation reads finished cells back, the sweep's own resume), the
phase-portrait functions of :mod:`cpl.families.multipath` for ``kind: phase`` jobs.

Every sweep is loaded (and every cell validated) before the first one runs; one progress bar
counts the cells of the whole job.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import lightning as L
from tqdm.auto import tqdm

from ..config import read_conf
from ..sweep import Sweep, load_sweep, run_sweep
from .declarations import Declarations, Job
from .results import Results, SweepOutcome

__all__ = ["job_sweep", "plan_sweeps", "run_jobs"]


def job_sweep(job: Job, variant: str, extra: Sequence[str] = ()) -> Sweep:
    """The sweep of one job variant: the conf's own sweep, or a one-cell sweep of a single-run conf.

    ``extra`` are overrides for every cell (the tracking store). A single-run conf gets
    ``sweep.grid.seed=[<seed>]``, no onset analysis and ``train/loss`` as the table's metric; a
    variant names its sweep after the job.
    """
    raw, _ = read_conf(job.conf)
    # the report shows every figure with its PDF (the onset sweeps' cells log PNG only by default)
    over = ["log.figure_formats=[png,pdf]", *job.overrides, *job.variants[variant], *extra]
    if "sweep" not in raw:
        if not any(o.startswith("sweep.grid") for o in over):
            over.append(f"sweep.grid.seed=[{int(raw.get('seed', 0))}]")
        over += ["sweep.onset_key=null", "sweep.metric=train/loss"]  # a metric every family logs
    if variant or "sweep" not in raw:
        over.append(f"sweep.name=reproduce/{job.name}" + (f"/{variant}" if variant else ""))
    return load_sweep(job.conf, over)


def plan_sweeps(decl: Declarations, extra: Sequence[str] = ()) -> dict[tuple[str, str], Sweep]:
    """Every sweep of the selected jobs, loaded and validated (nothing runs)."""
    return {
        (job.name, variant): job_sweep(job, variant, extra)
        for job in decl.jobs.values()
        if job.kind == "sweep"
        for variant in job.variants
    }


class _StepProgress(L.Callback):
    """Shows the current cell's step next to the job's progress bar."""

    def __init__(self, bar: Any, every: int = 100):
        self.bar, self.every, self.label = bar, every, ""

    def __getstate__(self) -> dict:
        # a pool's worker gets no bar (a tqdm bar does not pickle): there the sweep's own bar reports
        return {**self.__dict__, "bar": None}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.bar is not None and trainer.global_step % self.every == 0:
            self.bar.set_postfix_str(f"{self.label} step {trainer.global_step}/{trainer.max_steps}", refresh=True)


def _phase(job: Job) -> dict[str, Any]:
    from ..families.multipath.figures import phase_portrait_figure
    from ..families.multipath.phase import INITS

    p = job.phase
    deficits = {"early": tuple(p.get("early", (0, 15))), "late": tuple(p.get("late", (100, 115)))}
    out: dict[str, Any] = {"shares": {}, "figures": {}}
    for init in INITS:
        depths = p.get("depths", (2, 5, 8, 13))
        fig, shares = phase_portrait_figure(
            INITS[init], depths, p.get("s", 10.0), p.get("dt", 0.01), p.get("epochs", 300), deficits
        )
        out["figures"][f"phase_{init}"] = fig
        out["shares"].update({(init, d, depth): v for (d, depth), v in shares.items()})
    return out


def _pooled(sweep: Sweep) -> bool:
    """Whether the sweep's cells run outside this process (a pool, or Ray)."""
    from ..sweep.executors import make_executor, pooled

    return pooled(make_executor(sweep.settings))


def run_jobs(decl: Declarations, sweeps: dict[tuple[str, str], Sweep], client: Any, progress: bool = True) -> Results:
    """Run (or read back) every sweep and phase job; a sweep shared by two jobs runs once."""
    res = Results(client)
    phases = [j for j in decl.jobs.values() if j.kind == "phase"]
    total = sum(len(s.cells) for s in sweeps.values()) + len(phases)
    bar = tqdm(total=total, desc=f"reproduce {decl.profile}", unit="cell", disable=not progress, dynamic_ncols=True)
    steps = _StepProgress(bar)
    done: dict[tuple[str, str], SweepOutcome] = {}  # (sweep name, hash) -> outcome
    try:
        for job in phases:
            bar.set_postfix_str(job.name, refresh=True)
            res.phase[job.name] = _phase(job)
            bar.update(1)
        for (job, variant), sweep in sweeps.items():
            steps.label = f"{job}" + (f"/{variant}" if variant else "")
            key = (sweep.name, sweep.sweep_hash)
            if key not in done:
                t0 = time.perf_counter()
                # on a process pool the steps reach the sweep's own bar (cells run elsewhere)
                out = run_sweep(sweep, callbacks=[steps], progress=progress and _pooled(sweep))
                done[key] = SweepOutcome(
                    job,
                    variant,
                    sweep.name,
                    out.parent_run_id,
                    sweep.settings.onset_key,
                    out.rows,
                    seconds=time.perf_counter() - t0,
                    resumed=sum(bool(r["resumed"]) for r in out.rows),
                )
            first = done[key]
            res.sweeps[(job, variant)] = SweepOutcome(
                job, variant, first.name, first.parent_run_id, first.onset_key, first.rows, first.seconds, first.resumed
            )
            bar.update(len(sweep.cells))
    finally:
        bar.close()
    return res
