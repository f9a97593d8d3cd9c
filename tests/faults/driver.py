"""One ``cpl`` command with one fault injected: ``python driver.py '{"fault": NAME, "at": N, "argv": [...]}'``.

Faults replace one function of cpl for the life of this process (signals to itself at a point of
a run, a full disk, a store that fails or hangs); ``none`` runs the command as it is. The exit code
is the command's. Rows handed to the store are counted by ``site/sitecustomize.py``.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import time

SPEC = json.loads(sys.argv[1])
AT = int(SPEC.get("at", 0))
SIG = getattr(signal, SPEC.get("signal", "SIGINT"))


def _once(fn):
    """Call ``fn`` the first time only."""
    done = []

    def wrapper(*args, **kwargs):
        if not done:
            done.append(1)
            fn(*args, **kwargs)

    return wrapper


kill_self = _once(lambda: os.kill(os.getpid(), SIG))


def signal_at_creation() -> None:
    from cpl import tracking
    from cpl.tracking import store

    def start_run(*args, **kwargs):
        run_id = store.start_run(*args, **kwargs)
        kill_self()
        return run_id

    tracking.start_run = start_run


def signal_in_training() -> None:
    from cpl.tracking.logger import MemberRouterLogger

    real = MemberRouterLogger.log_metrics

    def log_metrics(self, metrics, step=None):
        real(self, metrics, step)
        if step is not None and step >= AT:
            kill_self()

    MemberRouterLogger.log_metrics = log_metrics


def _patch_figures(action) -> None:
    import cpl.run

    real = cpl.run.log_figure

    def log_figure(*args, **kwargs):
        action()
        return real(*args, **kwargs)

    cpl.run.log_figure = log_figure


def _enospc(what="No space left on device"):
    raise OSError(errno.ENOSPC, what)


def _patch_checkpoint_rename(action) -> None:
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if ".last.ckpt.tmp" in str(src):
            action()
        return real(src, dst, *args, **kwargs)

    os.replace = replace


def _patch_store(after: int, action) -> None:
    from cpl.tracking import writer

    real, calls = writer._store_write, []

    def store_write(client, batch):
        calls.append(1)
        if len(calls) > after:
            action()
        return real(client, batch)

    writer._store_write = store_write


def _mlflow_500():
    from mlflow.exceptions import MlflowException

    raise MlflowException("API request failed with error code 500 != 200 (INTERNAL_ERROR)")


def checkpoint_disk_full() -> None:
    import cpl.core.checkpoint as ck

    def save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial")
        _enospc()

    ck.torch.save = save


FAULTS = {
    "none": lambda: None,
    "signal_at_creation": signal_at_creation,
    "signal_in_training": signal_in_training,
    "signal_in_final_logging": lambda: _patch_figures(kill_self),
    "signal_in_checkpoint_write": lambda: _patch_checkpoint_rename(kill_self),
    "disk_full_in_final_logging": lambda: _patch_figures(_once(_enospc)),
    "disk_full_in_checkpoint_write": checkpoint_disk_full,
    "store_disk_full": lambda: _patch_store(AT, lambda: _enospc("database or disk is full")),
    "store_hangs": lambda: _patch_store(AT, lambda: time.sleep(3600)),
    "store_500": lambda: _patch_store(AT, _mlflow_500),
}

if __name__ == "__main__":
    FAULTS[SPEC.get("fault", "none")]()
    from cpl.cli.main import main

    sys.exit(main(SPEC["argv"]))
