#!/usr/bin/env python
"""Speed of the Lightning + MLflow run against a plain PyTorch loop on the same work.

usage: python scripts/bench.py [conf=matcomp_rank10to5] [repeats=3] [key=value ...]

Defaults to the paper's config (depth 3, N = 100) scaled to 6000 steps (switch at 3000);
override with switch.at_step=... train.steps_after_switch=... Prints steps/s and the ratios.
"""

import sys

from cpl.cli import bench_main

if __name__ == "__main__":
    sys.exit(bench_main(sys.argv[1:]))
