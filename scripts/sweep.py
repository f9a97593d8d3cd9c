#!/usr/bin/env python
"""Run or resume a sweep: ``python scripts/sweep.py conf=NAME [key=value ...]`` (see --help)."""

import sys

from cpl.cli import sweep_main

if __name__ == "__main__":
    sys.exit(sweep_main(sys.argv[1:]))
