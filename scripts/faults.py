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

from faults.harness import bad_config_outcomes, run_outcomes, table  # noqa: E402
from faults.runtime import FAULTS  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bad-only", action="store_true", help="only the bad configs (in-process, seconds)")
    parser.add_argument("--runtime-only", action="store_true", help="only the runtime faults (subprocesses)")
    parser.add_argument("-j", type=int, default=2, help="runtime faults run at once (default 2)")
    parser.add_argument("-k", default="", help="only the cases whose name contains this text")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    outcomes = []
    if not args.runtime_only:
        outcomes += [o for o in bad_config_outcomes() if args.k in o.name]
    if not args.bad_only:
        outcomes += run_outcomes([f for f in FAULTS if args.k in f.name], parallel=args.j)
    print(table(outcomes))
    print(f"\n{len(outcomes)} cases in {time.perf_counter() - t0:.0f} s")
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
