#!/usr/bin/env python
"""Train one run: ``python scripts/train.py conf=NAME [key=value ...]`` (see --help)."""

import sys

from cpl.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main(sys.argv[1:]))
