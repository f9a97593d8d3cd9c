"""Loaded by every Python process of a fault case (PYTHONPATH): at exit, record how many metric rows
this process handed to the store writer (cpl.tracking.writer.POLICY.rows), the suite's "rows produced"."""

import atexit
import json
import os
import sys


def _audit() -> None:
    writer, path = sys.modules.get("cpl.tracking.writer"), os.environ.get("CPL_FAULT_AUDIT")
    if writer is not None and path:
        with open(path, "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "rows": writer.POLICY.rows}) + "\n")


atexit.register(_audit)
