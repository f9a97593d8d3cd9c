"""Checking the claims and writing the report: ``index.html``, ``report.md``, ``claims.json``, the
figures (PNG and PDF) next to their claims, and one MLflow run ``reproduce`` holding all of it.

``claims.json`` is a list of ``{id, claim, value, threshold, test, passed, ...}``; ``passed`` is
``null`` for observations (questions the paper does not answer). The MLflow run logs each claim's
value as the metric ``claim/<id>``, ``claim/<id>/passed`` (1/0), the tag ``claim.<id>``
(PASS/FAIL/OBSERVED/ERROR), and ``runs.json`` with the id of every run the claims used.
"""

from __future__ import annotations

import html
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from .declarations import Declarations
from .measures import MEASURES
from .results import Results

__all__ = ["check_claims", "collect_figures", "write_report", "log_parent", "claims_table"]


def check_claims(decl: Declarations, res: Results) -> list[dict[str, Any]]:
    """One row per claim: the measured value and PASS/FAIL (an evaluator error is a FAIL with its message)."""
    rows = []
    for c in decl.claims:
        args = {k: v for k, v in c.measure.items() if k != "kind"}
        try:
            value, detail = MEASURES[c.measure["kind"]](res, **args)
            passed = c.passes(value)
        except Exception as exc:  # a claim that cannot be measured fails, with the reason in its row
            value, detail, passed = math.nan, f"error: {type(exc).__name__}: {exc}", False
            print(f"claim {c.id}: {detail}", file=sys.stderr)
        rows.append(
            {
                "id": c.id,
                "figure": c.figure,
                "claim": c.claim,
                "value": float(value),
                "test": c.test,
                "threshold": c.threshold,
                "passed": None if c.observation else bool(passed),
                "holds": bool(passed),
                "observation": c.observation,
                "detail": detail,
                "source": c.source,
                "runs": res.run_ids(c.measure["job"]),
            }
        )
    return rows


def _status(row: dict[str, Any]) -> str:
    if row["observation"]:
        return "OBSERVED " + ("yes" if row["holds"] else "no")
    return "PASS" if row["passed"] else "FAIL"


def claims_table(rows: list[dict[str, Any]]) -> str:
    """The claims as a terminal table: id, measured value, test, threshold, status."""
    width = max([len(r["id"]) for r in rows] + [5])
    lines = [f"{'claim':{width}s}  {'value':>12s}  test  {'threshold':>10s}  status"]
    for r in rows:
        lines.append(f"{r['id']:{width}s}  {r['value']:12.4g}  {r['test']:>4s}  {r['threshold']:10.4g}  {_status(r)}")
    return "\n".join(lines)


def collect_figures(decl: Declarations, res: Results, out: Path) -> dict[str, list[str]]:
    """Copy every declared figure (PNG, and its PDF where the run logged one) under ``out/figures``;
    figure id -> PNG paths (relative)."""
    from ..figures import FIGURE_FORMATS

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    figs: dict[str, list[str]] = {f: [] for f in decl.figures}
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for name, ph in res.phase.items():
        for label, fig in ph["figures"].items():
            stem = f"figures/{name}_{label}"
            for ext in FIGURE_FORMATS:
                fig.savefig(out / f"{stem}.{ext}")
            figs[decl.jobs[name].figure].append(f"{stem}.png")
    for (job, variant), sweep in res.sweeps.items():
        art = decl.jobs[job].artifacts
        sources = [(sweep.parent_run_id, p, "summary") for p in art.get("parent", [])]
        rows = res.rows(job, variant, art.get("where")) if art.get("children") else []
        sources += [(r["run_id"], p, f"cell{r['cell']}") for r in rows for p in art.get("children", [])]
        for run_id, path, label in sources:
            stem = "_".join(x for x in (job, variant, label, Path(path).stem) if x)
            for ext in (".png", ".pdf"):
                try:
                    src = res.client.download_artifacts(run_id, str(Path(path).with_suffix(ext)), str(out / "tmp"))
                except Exception:  # noqa: BLE001 - MlflowException: not logged
                    if ext == ".png":
                        raise
                    continue  # a run recorded with log.figure_formats=[png] (reused by a later reproduce)
                shutil.move(src, out / "figures" / f"{stem}{ext}")
            figs[decl.jobs[job].figure].append(f"figures/{stem}.png")
    shutil.rmtree(out / "tmp", ignore_errors=True)
    return figs


def _pdf_link(out: Path, png: str, kind: str) -> str:
    """`` (PDF)`` linking the figure's PDF beside it, or nothing where there is none."""
    pdf = str(Path(png).with_suffix(".pdf"))
    if not (out / pdf).is_file():
        return ""
    return f" ([PDF]({pdf}))" if kind == "md" else f" (<a href='{html.escape(pdf)}'>PDF</a>)"


def _markdown(decl: Declarations, rows: list[dict[str, Any]], figs: dict[str, list[str]], meta: dict, out: Path) -> str:
    lines = [f"# Reproduction of Kleinman, Achille & Soatto (ICLR 2024): profile {decl.profile}", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()] + [""]
    for fid, title in decl.figures.items():
        lines += [f"## {title}", ""]
        lines += [f"![{Path(p).stem}]({p})" + _pdf_link(out, p, "md") for p in figs.get(fid, [])]
        lines += ["", "| claim | measured | test | status |", "|---|---|---|---|"]
        for r in (r for r in rows if r["figure"] == fid):
            lines.append(
                f"| **{r['id']}**: {r['claim']} | {r['value']:.4g} | {r['test']} {r['threshold']:g} | {_status(r)} |"
            )
        lines += [""] + [f"- {r['id']}: {r['detail']} (threshold: {r['source']})" for r in rows if r["figure"] == fid]
        lines.append("")
    return "\n".join(lines)


def _html(
    decl: Declarations, rows: list[dict[str, Any]], figs: dict[str, list[str]], meta: dict, links: dict, out: Path
) -> str:
    e = html.escape
    parts = [
        "<!doctype html><meta charset='utf-8'><title>cpl reproduce</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}img{max-width:100%}"
        "td,th{border:1px solid #ccc;padding:4px}.PASS{color:green}.FAIL{color:#b00}</style>",
        f"<h1>Reproduction of Kleinman, Achille &amp; Soatto (ICLR 2024): profile {e(decl.profile)}</h1><ul>",
    ]
    parts += [f"<li>{e(k)}: {e(str(v))}</li>" for k, v in meta.items()] + ["</ul>"]
    for fid, title in decl.figures.items():
        parts.append(f"<h2 id='{e(fid)}'>{e(title)}</h2>")
        for p in figs.get(fid, []):
            parts.append(f"<figure><img src='{e(p)}'><figcaption>{e(Path(p).stem)}{_pdf_link(out, p, 'html')}")
            parts.append("</figcaption></figure>")
        parts.append("<table><tr><th>claim</th><th>measured</th><th>test</th><th>status</th><th>runs</th></tr>")
        for r in (r for r in rows if r["figure"] == fid):
            status = _status(r)
            run_links = " ".join(f"<a href='{e(links[i])}'>{i[:6]}</a>" for i in r["runs"][:1] if i in links)
            parts.append(
                f"<tr><td><b>{e(r['id'])}</b>: {e(r['claim'])}<br><small>{e(r['detail'])}<br>threshold: "
                f"{e(r['source'])}</small></td><td>{r['value']:.4g}</td><td>{e(r['test'])} {r['threshold']:g}</td>"
                f"<td class='{status.split()[0]}'>{e(status)}</td><td>{run_links}</td></tr>"
            )
        parts.append("</table>")
    return "\n".join(parts) + "\n"


def write_report(
    decl: Declarations, res: Results, rows: list[dict[str, Any]], out: Path, meta: dict, links: dict
) -> dict[str, Path]:
    """Write the report's files under ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    figs = collect_figures(decl, res, out)
    files = {"html": out / "index.html", "md": out / "report.md", "json": out / "claims.json"}
    files["html"].write_text(_html(decl, rows, figs, meta, links, out))
    files["md"].write_text(_markdown(decl, rows, figs, meta, out))
    plain = [{**r, "value": None if math.isnan(r["value"]) else r["value"]} for r in rows]  # JSON has no NaN
    files["json"].write_text(json.dumps(plain, indent=1, default=str) + "\n")
    return files


def log_parent(client: Any, run_id: str, rows: list[dict[str, Any]], res: Results, out: Path) -> None:
    """The claims as metrics and tags of the ``reproduce`` run, the report as its artifacts."""
    from mlflow.entities import Metric, RunTag

    ts = int(time.time() * 1000)
    metrics, tags = [], []
    for r in rows:
        if not math.isnan(r["value"]):
            metrics.append(Metric(f"claim/{r['id']}", r["value"], ts, 0))
        metrics.append(Metric(f"claim/{r['id']}/passed", float(r["holds"]), ts, 0))
        tags.append(RunTag(f"claim.{r['id']}", _status(r)))
    runs = {
        f"{job}/{variant}" if variant else job: {"parent": s.parent_run_id, "cells": [x["run_id"] for x in s.rows]}
        for (job, variant), s in res.sweeps.items()
    }
    tags += [RunTag(f"run.{k}", v["parent"]) for k, v in runs.items()]
    client.log_batch(run_id, metrics=metrics, tags=tags)
    client.log_text(run_id, json.dumps(runs, indent=1) + "\n", "runs.json")
    client.log_artifacts(run_id, str(out), "report")
