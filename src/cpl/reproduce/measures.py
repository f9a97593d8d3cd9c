"""The measures a claim can name: small functions ``measure(results, job=..., ...) -> (value, detail)``.

Each reads what the runs recorded (:class:`~cpl.reproduce.results.Results`) and returns one number
and a short text saying where it came from. A claim compares the number with its threshold
(:mod:`cpl.reproduce.declarations`); adding a kind of measure is adding a function to :data:`MEASURES`.

Pathway strengths are the logged ``pathway_<P>_ref/<i>`` (``K_{P,i} = (U^T f_P(X) V)_{ii}``) at
the run's last step; a mode's singular value is ``s_i = train/mode_error_i + sum_P K_{P,i}``; a
mode counts as learned when ``sum_P K_{P,i} >= LEARNED * s_i``
(:data:`cpl.families.multipath.summary.LEARNED`), and only learned modes have a share.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..families.multipath.phase import INITS
from ..families.multipath.summary import LEARNED
from .results import Results

__all__ = ["MEASURES", "strengths", "reduce_values"]

Where = Optional[dict[str, Any]]
_REF = re.compile(r"^pathway_(\w+)_ref/(\d+)$")


def reduce_values(values: np.ndarray, how: str, center: float = 0.5) -> float:
    """``min``, ``max``, ``maxabs`` (largest |x|), ``maxdev`` (largest |x - center|) or ``minstep``
    (smallest step between consecutive values) of ``values``.

    >>> reduce_values(np.array([0.4, 0.7]), "maxdev")
    0.2
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no values to reduce")
    ops: dict[str, Callable[[np.ndarray], float]] = {
        "min": np.min,
        "max": np.max,
        "maxabs": lambda v: np.max(np.abs(v)),
        "maxdev": lambda v: np.max(np.abs(v - center)),
        "minstep": lambda v: np.min(np.diff(v)),  # > 0: strictly increasing in the given order
    }
    if how not in ops:
        raise ValueError(f"Expected `reduce` in {tuple(ops)}, got {how!r}")
    return round(float(ops[how](values)), 12)


def strengths(metrics: dict[str, float]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``({pathway: K (modes,)}, s (modes,))`` from a two-pathway run's final metrics."""
    found: dict[str, dict[int, float]] = {}
    for key, value in metrics.items():
        m = _REF.match(key)
        if m:
            found.setdefault(m.group(1), {})[int(m.group(2))] = value
    if not found:
        raise ValueError("the run logged no pathway strengths (pathway_<P>_ref/<i>)")
    n = max(max(v) for v in found.values())
    k = {p: np.array([v[i] for i in range(1, n + 1)]) for p, v in found.items()}
    total = sum(k.values())
    s = np.array([metrics[f"train/mode_error_{i}"] for i in range(1, n + 1)]) + total
    return k, s


def _shares(res: Results, row: dict[str, Any], pathway: str, step: Optional[int] = None) -> tuple[np.ndarray, ...]:
    """``(share of pathway per mode (NaN: not learned), learned fraction sum_P K / s per mode)``."""
    metrics = res.metrics(row["run_id"])
    if step is not None:
        metrics = {k: float(np.interp(step, *res.history(row["run_id"], k))) for k in metrics if _relevant(k)}
    k, s = strengths(metrics)
    total = sum(k.values())
    learned = total >= LEARNED * s
    share = np.where(learned, k[pathway] / np.where(learned, total, 1.0), np.nan)
    return share, total / s


def _relevant(key: str) -> bool:
    return bool(_REF.match(key)) or key.startswith("train/mode_error_")


def _modes(n: int, modes: Optional[Sequence[int]], exclude: Optional[Sequence[int]]) -> np.ndarray:
    keep = np.zeros(n, dtype=bool)
    keep[[m - 1 for m in (modes or range(1, n + 1))]] = True
    keep[[m - 1 for m in (exclude or [])]] = False
    return keep


def share(
    res: Results,
    job: str,
    pathway: str,
    reduce: str = "min",
    variant: str = "",
    where: Where = None,
    modes: Optional[list[int]] = None,
    exclude: Optional[list[int]] = None,
) -> tuple[float, str]:
    """Pathway ``pathway``'s final share of the learned modes ``modes`` (1-based; default all) but
    ``exclude``, over every matching cell."""
    picked, parts = [], []
    for row in res.rows(job, variant, where):
        values, _ = _shares(res, row, pathway)
        keep = _modes(len(values), modes, exclude) & ~np.isnan(values)
        picked.append(values[keep])
        parts.append(f"{_label(row)}{np.round(values, 3).tolist()}")
    return reduce_values(np.concatenate(picked), reduce), f"share of {pathway} per mode: " + "; ".join(parts)


def _label(row: dict[str, Any]) -> str:
    """The grid values of a cell, for a detail text (empty for a one-cell sweep over the seed)."""
    skip = {"cell", "status", "resumed", "run_id", "seconds", "error", "seed", "relative_error"}
    values = {k: v for k, v in row.items() if k not in skip and "/" not in k}
    return " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in values.items()) + (": " if values else "")


def difference(res: Results, job: str, key: str, where: Where, baseline: Where, variant: str = "") -> tuple[float, str]:
    """Smallest ``key`` over the cells matching ``where`` minus ``key`` of the ``baseline`` cell."""
    base = res.value(res.one(job, variant, baseline), key)
    rows = res.rows(job, variant, where)
    values = np.array([res.value(r, key) for r in rows])
    detail = f"{key}: baseline {_label(res.one(job, variant, baseline))}{base:.4g}; " + ", ".join(
        f"{_label(r)}{v:.4g}" for r, v in zip(rows, values)
    )
    return float(values.min() - base), detail


def share_shift(
    res: Results,
    job: str,
    variant: str,
    reference: str,
    pathway: str,
    select: str = "all",
    reduce: str = "maxabs",
    where: Where = None,
) -> tuple[float, str]:
    """Change of pathway ``pathway``'s final share per mode from the ``reference`` variant's (the same
    cell of its sweep), over the modes learned (> 90% of s_i) or not yet learned (< 50%) at the
    deficit's onset, or ``all``, over every matching cell."""
    refs = {r["cell"]: r for r in res.rows(job, reference, where)}
    diffs, parts = [], []
    for row in res.rows(job, variant, where):
        onset = int(float(res.params(row["run_id"])["deficit.start"]))
        values, _ = _shares(res, row, pathway)
        base, _ = _shares(res, refs[row["cell"]], pathway)
        _, frac = _shares(res, row, pathway, step=onset)
        chosen = {"learned": frac > 0.9, "unlearned": frac < 0.5, "all": np.ones_like(frac, dtype=bool)}[select]
        diffs.append((values - base)[chosen & ~np.isnan(values - base)])
        modes = (np.flatnonzero(chosen) + 1).tolist()
        parts.append(f"{_label(row)}{select} modes at step {onset}: {modes}; shift {np.round(diffs[-1], 3).tolist()}")
    return reduce_values(np.concatenate(diffs), reduce), "; ".join(parts)


def ode_gap(res: Results, job: str, key: str = "ode/deviation", where: Where = None) -> tuple[float, str]:
    """Largest logged ``key`` (ODE against gradient descent) over every run of the job, split into the
    phases before, during and after each run's deficit or task switch."""
    worst, parts = 0.0, []
    for (j, variant), sweep in res.sweeps.items():
        if j != job:
            continue
        for row in res.rows(job, variant, where):
            steps, values = res.history(row["run_id"], key)
            params = res.params(row["run_id"])
            start = int(float(params.get("deficit.start", params.get("switch.at_step", 0))))
            end = int(float(params.get("deficit.end", start)))
            if params.get("deficit.enabled", "True") == "False":
                start = end = int(steps.max()) + 1
            for label, mask in (("before", steps < start), ("during", (steps >= start) & (steps < end))):
                if mask.any():
                    parts.append(f"{variant or row['cell']} {label} {values[mask].max():.2g}")
            after = steps >= end
            if after.any():
                parts.append(f"{variant or row['cell']} after {values[after].max():.2g}")
            worst = max(worst, float(values.max()))
    if not parts:
        raise ValueError(f"job {job!r} logged no {key}")
    return worst, "; ".join(parts)


def _onset_rows(res: Results, job: str, variant: str, where: Where, onset: Any) -> list[dict[str, Any]]:
    rows = res.rows(job, variant, where)
    key = res.sweep(job, variant).onset_key
    if onset is None or key is None:
        return rows
    target = max(r[key] for r in rows) if onset == "last" else onset
    return [r for r in rows if r[key] == target]


def sweep_value(
    res: Results,
    job: str,
    key: str,
    reduce: str = "max",
    where: Where = None,
    onset: Any = None,
    variant: str = "",
    denominator: Optional[str] = None,
) -> tuple[float, str]:
    """``key`` (a table column such as ``relative_error``, or a run metric; divided by the metric
    ``denominator`` if given) over the matching cells, at the onset ``onset`` (``last``: the
    longest; default: every onset), reduced."""
    rows = _onset_rows(res, job, variant, where, onset)
    values = np.array([res.value(r, key) / (res.value(r, denominator) if denominator else 1.0) for r in rows])
    name = f"{key} / {denominator}" if denominator else key
    return reduce_values(values, reduce), f"{name}: " + ", ".join(f"{_label(r)}{v:.3g}" for r, v in zip(rows, values))


def error_ratio(
    res: Results, job: str, min_onset: int, where: Where = None, variant: str = "", key: str = "test/final_error"
) -> tuple[float, str]:
    """Smallest ratio of ``key`` at an onset >= ``min_onset`` to ``key`` at the first onset."""
    rows = res.rows(job, variant, where)
    onset = res.sweep(job, variant).onset_key
    first = min(r[onset] for r in rows)
    base = [res.value(r, key) for r in rows if r[onset] == first]
    if len(base) != 1:
        raise ValueError(f"expected one cell at onset {first} with {where}, got {len(base)}")
    later = {r[onset]: res.value(r, key) for r in rows if r[onset] >= min_onset}
    ratio = min(v / base[0] for v in later.values())
    detail = f"{key} at onset {first}: {base[0]:.3g}; later: " + ", ".join(f"{o}: {v:.3g}" for o, v in later.items())
    return ratio, detail


def increasing(
    res: Results, job: str, by: str, key: str, onset: Any = None, where: Where = None, variant: str = ""
) -> tuple[float, str]:
    """Smallest step of ``key`` between consecutive values of ``by`` (> 0: strictly increasing)."""
    rows = sorted(_onset_rows(res, job, variant, where, onset), key=lambda r: r[by])
    values = np.array([res.value(r, key) for r in rows])
    if len(rows) < 2 or len({r[by] for r in rows}) != len(rows):
        raise ValueError(f"expected one cell per value of {by} in job {job!r}, got {[r[by] for r in rows]}")
    detail = f"{key} by {by}: " + ", ".join(f"{r[by]}: {v:.4g}" for r, v in zip(rows, values))
    return float(np.min(np.diff(values))), detail


def phase_share(
    res: Results, job: str, deficit: str, depths: list[int], reduce: str = "min", inits: Sequence[str] = tuple(INITS)
) -> tuple[float, str]:
    """Final share of pathway a in the phase portraits (gradient flow of one mode) of ``job``."""
    shares = res.phase[job]["shares"]  # (init, deficit, depth) -> share
    picked = {(i, d): shares[(i, deficit, d)] for i in inits for d in depths}
    detail = ", ".join(f"{i} D={d}: {v:.3f}" for (i, d), v in picked.items())
    return reduce_values(np.array(list(picked.values())), reduce), f"{deficit} deficit, share of a: {detail}"


#: measure kind (as claims.yaml names it) -> function
MEASURES: dict[str, Callable[..., tuple[float, str]]] = {
    "share": share,
    "share_shift": share_shift,
    "ode_gap": ode_gap,
    "sweep_value": sweep_value,
    "error_ratio": error_ratio,
    "increasing": increasing,
    "difference": difference,
    "phase_share": phase_share,
}
