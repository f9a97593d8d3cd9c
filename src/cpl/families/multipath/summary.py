"""The result of a two-pathway run at a glance: each pathway's share of every task mode, and who won.

For task mode i (singular value ``s_i``) the strength of pathway P is ``K_{P,i} = (U^T W_P V)_{ii}``
(through the pathway's hooks, so a lesion in force at the end counts), and its share is
``K_{P,i} / sum_Q K_{Q,i}``. A pathway *wins* a mode when it holds more than half of it; a mode
whose total strength is below :data:`LEARNED` of ``s_i`` is not learned yet (no winner).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

__all__ = ["LEARNED", "share_rows", "headline", "report", "tables"]

#: a mode counts as learned when the pathways' strengths add up to this fraction of s_i
LEARNED = 0.05


def share_rows(module: Any, member: int = 0) -> list[dict[str, Any]]:
    """One row per task mode: ``mode`` (1-based), ``s``, ``K_<P>`` and ``share_<P>`` per pathway, ``winner``."""
    names = list(module.pathway_names)
    k = module.mode_strengths()[:, member].detach().double().cpu().numpy()  # (P, modes)
    s = module.singular_values[member].detach().double().cpu().numpy()
    rows = []
    for i in range(k.shape[1]):
        total = float(k[:, i].sum())
        learned = abs(total) >= LEARNED * float(s[i]) and total > 0
        shares = k[:, i] / total if learned else np.full(len(names), np.nan)
        row: dict[str, Any] = {"mode": i + 1, "s": float(s[i])}
        row.update({f"K_{n}": float(k[p, i]) for p, n in enumerate(names)})
        row.update({f"share_{n}": float(shares[p]) for p, n in enumerate(names)})
        best = int(np.nanargmax(shares)) if learned else -1
        row["winner"] = names[best] if learned and shares[best] > 0.5 else "-"
        rows.append(row)
    return rows


def headline(cfg: Any, module: Any, member: int, metrics: dict[str, float]) -> dict[str, float]:
    """``final/share_<P>`` (P's part of the summed strength of all modes), ``final/train_loss`` and
    ``final/won_modes_<P>`` (how many modes P holds more than half of)."""
    rows = share_rows(module, member)
    names = list(module.pathway_names)
    strength = {n: sum(r[f"K_{n}"] for r in rows) for n in names}
    total = sum(strength.values())
    out = {f"final/share_{n}": strength[n] / total if total > 0 else float("nan") for n in names}
    if "train/loss" in metrics:
        out["final/train_loss"] = float(metrics["train/loss"])
    out.update({f"final/won_modes_{n}": float(sum(r["winner"] == n for r in rows)) for n in names})
    return out


def report(cfg: Any, module: Any, member: int) -> str:
    """The shares as a table for the terminal, with a line saying who won which modes."""
    rows = share_rows(module, member)
    names = list(module.pathway_names)
    head = f"  {'mode':>4s} {'s':>7s} " + " ".join(f"{'share ' + n:>9s}" for n in names) + "  winner"
    lines = ["Pathway shares per mode at the end (K_P / sum over pathways):", head]
    for r in rows:
        cells = " ".join(f"{r[f'share_{n}']:9.3f}" for n in names)
        lines.append(f"  {r['mode']:4d} {r['s']:7.3f} {cells}  {r['winner']}")
    won = {n: [r["mode"] for r in rows if r["winner"] == n] for n in names}
    lines.append(
        "  "
        + "; ".join(
            f"pathway {n} holds {len(m)} mode(s)" + (f" ({', '.join(map(str, m))})" if m else "")
            for n, m in won.items()
        )
    )
    return "\n".join(lines)


def tables(cfg: Any, module: Any, member: int) -> dict[str, str]:
    """``tables/pathway_shares.csv``: the rows of :func:`share_rows`."""
    rows = share_rows(module, member)
    buf = io.StringIO()
    cols = list(rows[0]) if rows else ["mode"]
    buf.write(",".join(cols) + "\n")
    for r in rows:
        buf.write(",".join(repr(r[c]) if isinstance(r[c], float) else str(r[c]) for c in cols) + "\n")
    return {"tables/pathway_shares.csv": buf.getvalue()}
