"""``python -m cpl.cli ...`` is the ``cpl`` command."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
