#!/usr/bin/env python
"""How fast the `cpl` command answers: wall time of `cpl --help`, `cpl train --help` and a config error.

usage: python scripts/bench_cli.py [repeats=10]

Runs each command `repeats` times as a fresh process (the installed `cpl` console script) and
prints the median and the fastest wall time, the median CPU time (user + system, which other
processes on a shared machine do not inflate) and the modules each imports (python -X importtime).
Target: under 1 s.
"""

import resource
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

COMMANDS = {
    "cpl --help": ["--help"],
    "cpl train --help": ["train", "--help"],
    "cpl train (config error)": ["train", "conf=matcomp_rank10to5", "model.depth=0"],
    "cpl sweep --cfg": ["sweep", "conf=matcomp_depth_sweep", "--cfg"],
}


def main(argv) -> int:
    repeats = 10
    for a in argv:
        key, _, value = a.partition("=")
        if key != "repeats" or not value.isdigit() or int(value) < 1:
            print(f"error: unknown argument {a!r}; allowed: repeats=N (N >= 1)", file=sys.stderr)
            return 2
        repeats = int(value)
    candidates = [Path(sysconfig.get_path("scripts")) / "cpl", Path(sys.executable).with_name("cpl")]
    candidates += [Path(p) for p in [shutil.which("cpl")] if p]
    script = next((p for p in candidates if p.is_file()), None)
    if script is None:
        print("error: the `cpl` console script is not installed (pip install -e .)", file=sys.stderr)
        return 2
    root = Path(__file__).resolve().parents[1]
    print(f"{'command':28s} {'median':>8s} {'fastest':>8s} {'cpu':>8s} {'modules':>8s}   ({repeats} runs each)")
    for label, args in COMMANDS.items():
        times, cpu = [], []
        for _ in range(repeats):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run([str(script), *args], capture_output=True, cwd=root, check=False)
            times.append(time.perf_counter() - t0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        code = f"import sys; sys.argv = ['cpl', *{args!r}]; import cpl.cli; cpl.cli.main(sys.argv[1:])"
        out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, cwd=root)
        modules = sum(line.startswith("import time:") for line in out.stderr.splitlines()) - 1
        wall, fastest, busy = statistics.median(times), min(times), statistics.median(cpu)
        print(f"{label:28s} {wall:7.3f}s {fastest:7.3f}s {busy:7.3f}s {modules:8d}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
