"""``cpl runs``: the runs of the store as a table in the terminal, and side-by-side comparisons."""

from __future__ import annotations

import datetime as _dt
import math
import sys
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from ..config import ConfigError, require
from ..tracking.uri import compare_url, tracking_uri, ui_base
from .options import StoreOptions, parse_options, store_field

__all__ = ["main", "RunsOptions", "format_table"]

USAGE = """\
usage: cpl runs [conf=NAME] [sweep=NAME] [filter=EXPR] [limit=20] [metrics=KEY,KEY]
                [compare=all|RUN,RUN,...] [tracking.uri=URI] [tracking.experiment=cpl]

List the runs of an experiment, newest first, with their headline metrics (final/*), or compare
runs side by side: the parameters that differ and the metrics.

  conf=NAME      runs of one conf (tag cpl.conf)
  sweep=NAME     the cells of the latest run of a sweep, in cell order, and its summary
  filter=EXPR    an MLflow search filter, e.g. "params.`model.depth` = '3'" or "metrics.`final/test_error` < 0.1"
  limit=N        at most N runs (default 20)
  metrics=K,K    the metric columns (default: the final/* headline metrics of the runs)
  compare=...    all: compare the listed runs; or run ids (or their first characters), comma-separated

Examples:
  cpl runs
  cpl runs sweep=matcomp_depth_sweep_quick
  cpl runs conf=matcomp_rank10to5 compare=all
"""


@dataclass
class RunsOptions:
    conf: Optional[str] = None
    sweep: Optional[str] = None
    filter: Optional[str] = None
    limit: int = 20
    metrics: Optional[str] = None
    compare: Optional[str] = None
    tracking: StoreOptions = store_field()


def _check(o: RunsOptions) -> None:
    require(o.limit >= 1, "limit", o.limit, "an integer >= 1")


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table, columns as wide as their widest cell, numbers right-aligned.

    >>> print(format_table(["a", "b"], [["x", 1.5], ["yy", 10]]))
    a     b
    x   1.5
    yy   10
    """
    cells = [[_fmt(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]
    numeric = [all(isinstance(row[i], (int, float)) for row in rows) and bool(rows) for i in range(len(header))]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(header), *(line(r) for r in cells)])


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return "" if v is None else str(v)


def _when(ms: Optional[int]) -> str:
    return _dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M") if ms else ""


def _duration(run) -> str:
    start, end = run.info.start_time, run.info.end_time
    if not start or not end:
        return ""
    s = (end - start) / 1000
    return f"{s:.1f}s" if s < 120 else f"{s / 60:.1f}min" if s < 7200 else f"{s / 3600:.1f}h"


def _search(client, exp_id: str, filters: list[str], limit: int) -> list:
    return list(
        client.search_runs(
            [exp_id],
            filter_string=" and ".join(f for f in filters if f),
            max_results=limit,
            order_by=["attributes.start_time DESC"],
        )
    )


def _sweep_runs(client, exp_id: str, name: str, filters: list[str], limit: int) -> tuple[Any, list]:
    parents = _search(client, exp_id, [f"tags.`cpl.sweep.role` = 'parent' and tags.`cpl.sweep.name` = '{name}'"], 1)
    if not parents:
        raise ConfigError(
            f"Invalid value for 'sweep': got {name!r}; allowed: the name of a sweep run in this experiment"
        )
    parent = parents[0]
    kids = _search(client, exp_id, [f"tags.mlflow.parentRunId = '{parent.info.run_id}'", *filters], max(limit, 1000))
    kids.sort(key=lambda r: int(r.data.tags.get("cpl.sweep.cell", 1 << 30)))
    return parent, kids[:limit]


def _metric_keys(runs: list, wanted: Optional[str]) -> list[str]:
    if wanted:
        return [k.strip() for k in wanted.split(",") if k.strip()]
    return sorted({k for r in runs for k in r.data.metrics if k.startswith("final/")})


def _listing(runs: list, keys: list[str]) -> str:
    header = ["run", "name", "status", "started", "took", *(k.removeprefix("final/") for k in keys)]
    rows = [
        [r.info.run_id[:8], (r.info.run_name or "")[:60], r.info.status, _when(r.info.start_time), _duration(r)]
        + [r.data.metrics.get(k, float("nan")) for k in keys]
        for r in runs
    ]
    return format_table(header, rows)


def _comparison(runs: list, keys: list[str]) -> str:
    params = sorted({k for r in runs for k in r.data.params})
    differ = [k for k in params if len({r.data.params.get(k) for r in runs}) > 1 and k != "tracking.run_name"]
    header = ["", *(r.info.run_id[:8] for r in runs)]
    rows: list[list[Any]] = [["name", *((r.info.run_name or "")[:30] for r in runs)]]
    rows += [["status", *(r.info.status for r in runs)]]
    rows += [[k, *(r.data.params.get(k, "") for r in runs)] for k in differ]
    rows += [[k, *(_fmt(r.data.metrics.get(k, float("nan"))) for r in runs)] for k in keys]
    return format_table(header, rows)


def _pick(runs: list, client, exp_id: str, spec: str) -> list:
    if spec.strip() == "all":
        return runs
    out = []
    for token in [t.strip() for t in spec.split(",") if t.strip()]:
        found = [r for r in runs if r.info.run_id.startswith(token)]
        if not found:  # not among the listed runs: any of the experiment's latest 1000
            found = [r for r in _search(client, exp_id, [], 1000) if r.info.run_id.startswith(token)]
        require(len(found) == 1, "compare", token, "a run id (or its first characters) matching exactly one run")
        out.append(found[0])
    return out


def main(argv: Sequence[str]) -> int:
    o, code = parse_options(argv, RunsOptions, USAGE, _check)
    if code is not None:
        return code
    from ..tracking import get_client

    uri = tracking_uri(o.tracking.uri)
    try:
        client = get_client(uri)
        exp = client.get_experiment_by_name(o.tracking.experiment)
        require(exp is not None, "tracking.experiment", o.tracking.experiment, f"an experiment of the store {uri}")
        filters = [f"tags.`cpl.conf` = '{o.conf}'" if o.conf else "", o.filter or ""]
        parent = None
        if o.sweep:
            parent, runs = _sweep_runs(client, exp.experiment_id, o.sweep, filters, o.limit)
        else:
            runs = _search(client, exp.experiment_id, filters, o.limit)
        chosen = _pick(runs, client, exp.experiment_id, o.compare) if o.compare else runs
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not chosen:
        print(f"no runs in experiment {o.tracking.experiment!r} of {uri}" + (" matching" if any(filters) else ""))
        return 0
    keys = _metric_keys(chosen, o.metrics)
    if parent is not None:
        crit = {k: v for k, v in sorted(parent.data.metrics.items()) if k.startswith("critical_period/")}
        print(f"sweep {o.sweep!r}: parent run {parent.info.run_id} ({parent.info.status}), {len(runs)} cells shown")
        for k, v in crit.items():
            print(f"  {k}: {v:g}")
    print(_comparison(chosen, keys) if o.compare else _listing(chosen, keys))
    if o.compare:
        print(f"\nin the UI:  {compare_url(ui_base(uri), exp.experiment_id, [r.info.run_id for r in chosen])}")
    return 0
