"""Figures logged as MLflow artifacts: matplotlib's object API (``Figure``), no pyplot state.

Figures made here never touch the global backend or pyplot's figure registry, so cpl works the
same in a notebook, a worker process or a thread, and a figure needs no ``plt.close``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from .config.sections import FORMATS

__all__ = [
    "new_figure",
    "palette",
    "singular_value_figure",
    "ode_overlay_figure",
    "critical_period_figure",
    "log_figure",
    "FIGURE_FORMATS",
]


def new_figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (6, 4), dpi: int = 110, **subplot_kw):
    """``(figure, axes)`` like ``plt.subplots``, on a standalone :class:`~matplotlib.figure.Figure`."""
    fig = Figure(figsize=figsize, dpi=dpi)
    return fig, fig.subplots(nrows, ncols, **subplot_kw)


def palette(n: int) -> np.ndarray:
    """``n`` colours from viridis (the colour scale of every cpl figure)."""
    return colormaps["viridis"](np.linspace(0, 0.9, max(1, n)))


def singular_value_figure(
    steps: Sequence[int],
    values: np.ndarray,
    switch_step: int | None = None,
    projections: np.ndarray | None = None,
    title: str = "",
    value_label: str = "singular value",
):
    """Trajectories of the top singular values of one member against the step.

    Args:
        steps: (T,) global steps.
        values: (T, k) singular values, largest first.
        switch_step: marked with a vertical line.
        projections: optional (T, k) values in the reference basis, drawn dashed.
    """
    steps = np.asarray(steps)
    values = np.asarray(values)
    # drawn once per cell of a sweep: a fixed layout, unicode labels and a legend outside the axes
    # keep it to a few tens of milliseconds (tight_layout, mathtext and loc="best" tripled that)
    fig, ax = new_figure(figsize=(7.5, 4.2), dpi=110)
    fig.subplots_adjust(left=0.09, right=0.79, bottom=0.12, top=0.92)
    colors = palette(values.shape[1])
    for i in range(values.shape[1]):
        ax.plot(steps, values[:, i], color=colors[i], lw=1.4, label=f"σ{_subscript(i + 1)}" if i < 10 else None)
    if projections is not None:
        projections = np.asarray(projections)
        for i in range(projections.shape[1]):
            ax.plot(steps, projections[:, i], color=colors[min(i, len(colors) - 1)], lw=1.0, ls="--")
        ax.plot([], [], color="gray", ls="--", label="final-task basis")
    if switch_step is not None:
        ax.axvline(switch_step, color="crimson", ls=":", lw=1.5, label=f"switch (step {switch_step})")
    ax.set_xlabel("step")
    ax.set_ylabel(value_label)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.grid(alpha=0.3)
    return fig


def _subscript(n: int) -> str:
    """``12 -> '₁₂'``."""
    return str(n).translate(str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉"))


def ode_overlay_figure(
    steps: Sequence[int],
    sgd: np.ndarray,
    ode: np.ndarray,
    switch_step: int | None = None,
    title: str = "",
    reference: str = "ODE",
    value_label: str = "singular value",
    log_y: bool = False,
):
    """SGD (markers) against an analytic reference (dashed lines), one colour per component.

    Args:
        steps: (T,) global steps.
        sgd: (T, k) measured values; ode: (T, k) reference values.
        switch_step: marked with a vertical line.
        reference: the reference's name (legend).

    >>> fig = ode_overlay_figure([0, 10], np.ones((2, 3)), np.ones((2, 3)), switch_step=5)
    >>> len(fig.axes[0].lines)
    9
    """
    steps, sgd, ode = np.asarray(steps), np.asarray(sgd), np.asarray(ode)
    fig, ax = new_figure(figsize=(7, 4.2), dpi=110)
    k = sgd.shape[1]
    colors = palette(k)
    every = max(1, len(steps) // 60)
    for i in range(k):
        ax.plot(steps[::every], sgd[::every, i], "o", ms=3, color=colors[i], alpha=0.8)
        ax.plot(steps, ode[:, i], "--", lw=1.3, color=colors[i])
    ax.plot([], [], "o", color="gray", ms=3, label="SGD")
    ax.plot([], [], "--", color="gray", label=reference)
    if switch_step is not None:
        ax.axvline(switch_step, color="crimson", ls=":", lw=1.5, label=f"switch (step {switch_step})")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(value_label)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def critical_period_figure(
    curves: dict[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str = "deficit length (steps)",
    ylabel: str = "relative error",
    title: str = "",
    threshold: float | None = None,
):
    """One curve per group against the deficit onset (paper Figs. 4 and 5).

    Args:
        curves: ``{label: (onsets, values)}``; NaN values (failed cells) leave gaps.
        threshold: drawn as a horizontal line (the critical-period threshold).
    """
    fig, ax = new_figure(figsize=(6, 4), dpi=110)
    colors = palette(max(1, len(curves)))
    for color, (label, (xs, ys)) in zip(colors, curves.items()):
        ax.plot(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float), "o-", color=color, lw=1.6, ms=4, label=label)
    if threshold is not None:
        ax.axhline(threshold, color="crimson", ls=":", lw=1.2, label=f"threshold {threshold:g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


#: formats every logged figure is written in: PNG for the UI, PDF (vector) for papers
FIGURE_FORMATS = ("png", "pdf")


def log_figure(client, run_id: str, fig, path: str, formats: Sequence[str] = FIGURE_FORMATS) -> list[str]:
    """Log ``fig`` at ``path`` in each of ``formats`` (the extension of ``path`` replaced; a path
    without one of them is logged as it is); return the paths.

    ``client`` is an ``mlflow.MlflowClient`` (anything with ``log_figure(run_id, figure, artifact_file)``).
    """
    stem, dot, ext = path.rpartition(".")
    paths = [f"{stem}.{f}" for f in formats] if dot and ext in FORMATS and formats else [path]
    for p in paths:
        client.log_figure(run_id, fig, p)
    return paths
