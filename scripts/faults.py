#!/usr/bin/env python
"""The fault-injection suite as a table: ``python scripts/faults.py [--bad-only | --runtime-only] [-j N] [-k TEXT]``.

Runs every bad config (in-process) and every runtime fault (subprocesses, N at a time; default 2)
of ``tests/faults/``, prints one row per case and the totals (runs left RUNNING, rows lost,
tracebacks), and exits 1 if any case failed.
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from faults.harness import HEAD, bad_config_outcomes, row, run_outcomes, table  # noqa: E402
from faults.runtime import FAULTS  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bad-only", action="store_true", help="only the bad configs (in-process, seconds)")
    parser.add_argument("--runtime-only", action="store_true", help="only the runtime faults (subprocesses)")
    parser.add_argument("-j", type=int, default=2, help="runtime faults run at once (default 2)")
    parser.add_argument("-k", default="", help="only the cases whose name contains this text (a|b: either)")
    args = parser.parse_args(argv)
    import logging

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    t0 = time.perf_counter()
    picked = lambda name: any(k in name for k in args.k.split("|"))  # noqa: E731
    outcomes = []
    if not args.runtime_only:
        outcomes += [o for o in bad_config_outcomes() if picked(o.name)]
    if not args.bad_only:
        chosen = [f for f in FAULTS if picked(f.name)]
        print(f"{len(chosen)} runtime faults, {args.j} at a time; as they end:\n{HEAD}", flush=True)
        outcomes += run_outcomes(chosen, parallel=args.j, report=lambda o: print(row(o), flush=True))
        print()
    print(table(outcomes))
    print(f"\n{len(outcomes)} cases in {time.perf_counter() - t0:.0f} s")
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
