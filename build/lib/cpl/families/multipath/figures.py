"""Figures of the two-pathway family: mode strengths of every pathway (with the ODE and the
intervention windows) and phase portraits of the scalar system (paper Figs. 1 and 7)."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ...figures import new_figure, palette
from .phase import DEFICITS, PhaseInit, flow_field, phase_trajectory

__all__ = ["pathway_figure", "phase_portrait_figure"]


def pathway_figure(
    steps,
    strengths: dict[str, np.ndarray],
    ode_steps=None,
    ode: Optional[dict[str, np.ndarray]] = None,
    windows: Optional[list[tuple[str, int, Optional[int]]]] = None,
    max_step: Optional[int] = None,
    title: str = "",
    ode_label: str = "ODE",
):
    """K_P trajectories of every pathway (one panel each), the ODE dashed, intervention windows shaded.

    Args:
        steps: (T,) steps of ``strengths``.
        strengths: ``{pathway: (T, k)}`` mode strengths of gradient descent.
        ode_steps, ode: the reference's steps and ``{pathway: (T', k)}``.
        windows: ``(label, start, end)`` to shade (end None = to ``max_step``).
    """
    names = list(strengths)
    fig, axes = new_figure(1, len(names), figsize=(5 * len(names) + 1.8, 3.8), dpi=110, sharey=True)
    axes = np.atleast_1d(axes)
    k = next(iter(strengths.values())).shape[1]
    colors = palette(k)
    end_default = max_step if max_step is not None else (int(np.max(steps)) if len(steps) else 0)
    for ax, name in zip(axes, names):
        vals = np.asarray(strengths[name])
        for i in range(k):
            ax.plot(steps, vals[:, i], color=colors[i], lw=1.6, label=f"mode {i + 1}")
            if ode is not None and name in ode:
                ax.plot(
                    ode_steps,
                    np.asarray(ode[name])[:, i],
                    color="k",
                    lw=0.9,
                    ls="--",
                    label=ode_label if i == 0 else None,
                )
        for label, start, end in windows or []:
            ax.axvspan(
                start,
                end if end is not None else end_default,
                color="crimson" if label.startswith("gate") else "orange",
                alpha=0.12,
                label=label,
            )
        ax.set_title(f"pathway {name}")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("mode strength $K = (U^T W V)_{ii}$")
    handles, labels = axes[-1].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center right", frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.84, 1))
    return fig


def phase_portrait_figure(
    init: PhaseInit,
    depths: Sequence[int] = (2, 5, 8, 13),
    s: float = 10.0,
    dt: float = 0.01,
    n_epochs: int = 300,
    deficits: Optional[dict[str, tuple[int, int]]] = None,
):
    """One row per deficit, one column per depth: the flow field, the trajectory with the deficit
    (pathway b gated) and without (dashed), and the final share of pathway a in the title.

    Returns:
        ``(figure, shares)`` with ``shares[(deficit, depth)]`` = final ``K_a / (K_a + K_b)``.
    """
    deficits = DEFICITS if deficits is None else deficits
    fig, axes = new_figure(
        len(deficits), len(depths), figsize=(3.2 * len(depths), 3.2 * len(deficits)), dpi=110, squeeze=False
    )
    shares: dict[tuple[str, int], float] = {}
    # the flow field and the no-deficit trajectory depend on the depth only: once per column
    fields = {depth: flow_field(depth, s, init.c) for depth in depths}
    bases = {depth: phase_trajectory(depth, s, init, dt, n_epochs) for depth in depths}
    for r, (dlabel, window) in enumerate(deficits.items()):
        for col, depth in enumerate(depths):
            ax = axes[r, col]
            ka, kb, va, vb = fields[depth]
            speed = np.hypot(va, vb)
            ax.streamplot(
                ka, kb, va, vb, color=np.log1p(speed), cmap="Greys", density=0.7, linewidth=0.6, arrowsize=0.6
            )
            base = bases[depth]
            traj = phase_trajectory(depth, s, init, dt, n_epochs, window)
            ax.plot(base[:, 0], base[:, 1], color="tab:blue", ls="--", lw=1.2, label="no deficit")
            ax.plot(traj[:, 0], traj[:, 1], color="crimson", lw=1.6, label=f"b gated, epochs {window[0]}-{window[1]}")
            end = min(window[1], n_epochs)
            ax.plot(traj[end, 0], traj[end, 1], "o", color="crimson", ms=4)
            ax.plot([0, s], [s, 0], color="gray", lw=0.8, ls=":")
            share = float(traj[-1, 0] / traj[-1].sum())
            shares[(dlabel, depth)] = share
            ax.set_xlim(0, 1.1 * s)
            ax.set_ylim(0, 1.1 * s)
            ax.set_title(f"D={depth}, {dlabel} deficit: a holds {100 * share:.0f}%", fontsize=8)
            if r == len(deficits) - 1:
                ax.set_xlabel("$K_a$")
            if col == 0:
                ax.set_ylabel("$K_b$")
    axes[0, 0].legend(fontsize=6, loc="upper right")
    fig.suptitle(f"Two-pathway gradient flow, s={s}, {init.label}; one epoch = {dt} time units", fontsize=9)
    fig.tight_layout()
    return fig, shares
