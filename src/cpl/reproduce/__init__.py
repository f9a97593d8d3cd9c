"""``cpl reproduce``: run the paper's experiments and check every claim with numbers.

The reproduction is data (``conf/reproduce/jobs.yaml``: figures and the confs that make them;
``conf/reproduce/claims.yaml``: one claim per entry, its measure, test and threshold), run through
the public entry points (:func:`cpl.sweep.run_sweep`, so a second invocation reuses finished runs)
and reported as ``reports/<date>-<profile>/`` (``index.html``, ``report.md``, ``claims.json``, the
figures as PNG and PDF) and one MLflow run ``reproduce`` holding the report and the claim results.
The exit code is 1 when a claim fails.
"""

from __future__ import annotations

from .command import ReproduceOptions, main

__all__ = ["main", "ReproduceOptions"]
