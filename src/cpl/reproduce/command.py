"""The ``cpl reproduce`` command (and ``python scripts/reproduce.py``): options, the run, the exit code."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from ..cli.options import StoreOptions, parse_options
from ..config import ConfigError

__all__ = ["ReproduceOptions", "main", "USAGE"]

USAGE = """\
usage: cpl reproduce [profile=quick|full] [only=fig4,fig9] [out=reports] [tracking.uri=URI]
                     [tracking.experiment=cpl] [progress=true]
       (or: python scripts/reproduce.py profile=quick ...)

Runs the paper's experiments (conf/reproduce/jobs.yaml) and checks every claim
(conf/reproduce/claims.yaml) with numbers; prints the claims table and writes
<out>/<date>-<profile>/index.html, report.md and claims.json, with every figure as PNG and PDF,
and one MLflow run "reproduce" holding the report, the claim results and links to the runs used.
Finished runs are reused: a second invocation (or one after an interruption) only runs what is
missing. Exit code 1 when a claim fails.

  profile   quick: the reduced confs (<= 10 min on 2 cores); full: the paper's settings
  only      figure ids or job names, comma-separated (fig1_7, fig2, fig2_depth, fig3, fig4, fig5,
            fig6, fig8, fig9, fig10, partial_depth, nonlinear)
  out       folder of the reports
"""


@dataclass
class ReproduceOptions:
    profile: str = "quick"
    only: Any = None  #: "fig4,fig9" or [fig4, fig9]; null = everything
    out: str = "reports"
    progress: bool = True
    tracking: StoreOptions = field(default_factory=StoreOptions)

    def only_list(self) -> list[str]:
        if not self.only:
            return []
        items = self.only.split(",") if isinstance(self.only, str) else list(self.only)
        return [str(i).strip() for i in items if str(i).strip()]


def _prepare(o: ReproduceOptions):
    """Declarations and sweeps, every cell validated before any work (raises ConfigError)."""
    from .. import tracking
    from .declarations import load
    from .runner import plan_sweeps

    decl = load(o.profile)
    if o.only_list():
        decl = decl.select(o.only_list())
    uri = tracking.tracking_uri(o.tracking.uri)
    extra = [f"tracking.uri={uri}", f"tracking.experiment={o.tracking.experiment}"]
    sweeps = plan_sweeps(decl, extra)
    if sweeps:
        uri = next(iter(sweeps.values())).base.tracking.uri  # made absolute by the sweep
    return decl, sweeps, uri


def run(o: ReproduceOptions, prepared: Optional[tuple] = None) -> tuple[int, list[dict[str, Any]], Path, str]:
    """Run a reproduction; ``(exit code, claim rows, report folder, reproduce run id)``."""
    from .. import tracking
    from .report import check_claims, claims_table, log_parent, write_report
    from .runner import run_jobs

    decl, sweeps, uri = prepared or _prepare(o)
    client = tracking.get_client(uri)
    tags = {"cpl.reproduce.profile": o.profile, "cpl.reproduce.only": ",".join(o.only_list()) or "all"}
    run_id = tracking.start_run(client, o.tracking.experiment, "reproduce", tags)
    t0 = time.perf_counter()
    try:
        res = run_jobs(decl, sweeps, client, progress=o.progress)
        rows = check_claims(decl, res)
        exp_id = client.get_run(run_id).info.experiment_id
        base = tracking.ui_base(uri)
        links = {i: tracking.run_url(base, exp_id, i) for r in rows for i in r["runs"]}
        suffix = "-" + "-".join(o.only_list()) if o.only_list() else ""
        out = Path(o.out) / f"{time.strftime('%Y-%m-%d')}-{o.profile}{suffix}"
        seconds = time.perf_counter() - t0
        meta = {
            "profile": o.profile,
            "wall time": f"{seconds:.0f} s",
            "cells run now / read back": f"{_count(res, False)} / {_count(res, True)}",
            "MLflow store": uri,
            "reproduce run": tracking.run_url(base, exp_id, run_id),
        }
        write_report(decl, res, rows, out, meta, links)
        tracking.log_params(client, run_id, {"profile": o.profile, "only": tags["cpl.reproduce.only"]})
        client.log_metric(run_id, "reproduce/wall_seconds", seconds)
        log_parent(client, run_id, rows, res, out)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    print(claims_table(rows))
    failed = [r["id"] for r in rows if r["passed"] is False]
    checked = [r for r in rows if not r["observation"]]
    print(
        f"\n{len(checked) - len(failed)}/{len(checked)} claims hold"
        + (f", {len(rows) - len(checked)} observations" if len(rows) > len(checked) else "")
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    print(f"report: {out / 'index.html'}  ({seconds:.0f} s)\nMLflow run: {tracking.run_url(base, exp_id, run_id)}")
    return (1 if failed else 0), rows, out, run_id


def _count(res: Any, resumed: bool) -> int:
    seen = {}
    for s in res.sweeps.values():
        seen[s.parent_run_id] = s.resumed if resumed else len(s.rows) - s.resumed
    return sum(seen.values())


def _check(o: ReproduceOptions) -> None:
    from .declarations import PROFILES

    if o.profile not in PROFILES:
        raise ConfigError(f"Invalid value for 'profile': got {o.profile!r}; allowed: {' or '.join(PROFILES)}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``cpl reproduce key=value ...``: 0 every claim holds, 1 a claim failed, 2 bad arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    o, code = parse_options(argv, ReproduceOptions, USAGE, _check)
    if code is not None:
        return code
    try:
        prepared = _prepare(o)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run(o, prepared)[0]
