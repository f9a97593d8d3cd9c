#!/usr/bin/env python
"""Reproduce the paper and check every claim: ``python scripts/reproduce.py profile=quick [only=fig4,fig9]``.

The same as ``cpl reproduce`` (``--help`` for the options); the logic is in :mod:`cpl.reproduce`.
"""

import sys

from cpl.reproduce import main

if __name__ == "__main__":
    sys.exit(main())
