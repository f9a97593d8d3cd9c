"""A helper process that writes metric rows to an MLflow store while training goes on.

MLflow's SQL store spends ~0.1 ms of Python per metric row (ORM objects, latest-metric upkeep),
about 15% of a long batched sweep on a 2-core machine. A thread cannot hide it (it holds the GIL
that the training loop needs between tensor ops); a process can, on the core that the small
matrix products leave idle. :class:`MetricWriter` starts ``python -m cpl.tracking.writer URI`` in its own
session (Ctrl-C reaches only the training process, which then flushes and marks the run KILLED).

Protocol, pickled over the child's stdin and stdout: the parent sends
``("write", [(run_id, [(key, value, timestamp, step), ...]), ...])`` or ``("close",)``; the child
answers every message with ``None`` or the traceback of the error that stopped its write. The
parent keeps a batch until it is acknowledged: if the child dies, the batch is written again in
the parent (MLflow ignores rows it already has), so nothing sent is lost.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["MetricWriter", "Batch"]

Row = tuple  # (key, value, timestamp_ms, step)
Batch = list  # [(run_id, [Row, ...]), ...]
_MAX_ROWS = 1000  # MLflow's limit per log_batch call


def write_batch(client, batch: Batch) -> None:
    """Write one batch with ``client.log_batch`` (at most 1000 rows a call)."""
    from mlflow.entities import Metric

    for run_id, rows in batch:
        for i in range(0, len(rows), _MAX_ROWS):
            client.log_batch(run_id, metrics=[Metric(*row) for row in rows[i : i + _MAX_ROWS]])


class MetricWriter:
    """Parent side: send batches to a writer process; at most one batch is in flight.

    ``send`` first collects the acknowledgement of the previous batch (waiting only if the child
    is still writing it), so memory and the delay of the records stay bounded by one batch.

    Raises:
        RuntimeError: the child reported an error while writing (the message includes its traceback).
    """

    def __init__(self, tracking_uri: str, client=None):
        import cpl

        self.uri, self.client = tracking_uri, client
        root = str(Path(cpl.__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])]))
        self._proc: Optional[subprocess.Popen] = subprocess.Popen(
            [sys.executable, "-m", "cpl.tracking.writer", tracking_uri],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=os.name == "posix",
        )
        self._inflight: Optional[Batch] = None
        self.wait_seconds = 0.0  #: time the parent spent waiting for acknowledgements
        self.fallbacks = 0  #: batches the parent wrote itself because the child was gone

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def send(self, batch: Batch) -> None:
        self._collect()
        if self._proc is None:
            self._write_here(batch)
            return
        self._inflight = batch
        try:
            pickle.dump(("write", batch), self._proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self._lost()

    def wait(self) -> None:
        """Return once every batch sent so far is written (or written here after a failure)."""
        self._collect()

    def close(self) -> None:
        self._collect()
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        try:
            pickle.dump(("close",), proc.stdin)
            proc.stdin.flush()
            pickle.load(proc.stdout)
        except (BrokenPipeError, OSError, EOFError):
            pass
        for stream in (proc.stdin, proc.stdout):
            stream.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung child
            proc.kill()

    def _collect(self) -> None:
        if self._inflight is None or self._proc is None:
            return
        t0 = time.perf_counter()
        try:
            error = pickle.load(self._proc.stdout)
        except (EOFError, OSError, pickle.UnpicklingError):
            self._lost()
            return
        finally:
            self.wait_seconds += time.perf_counter() - t0
        self._inflight = None
        if error is not None:
            raise RuntimeError(f"The MLflow writer process failed to write metrics to {self.uri}:\n{error}")

    def _lost(self) -> None:
        """The child is gone: write the unacknowledged batch here and write here from now on."""
        batch, self._inflight = self._inflight, None
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
        if batch is not None:
            self.fallbacks += 1
            self._write_here(batch)

    def _write_here(self, batch: Batch) -> None:
        if self.client is None:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=self.uri)
        write_batch(self.client, batch)


def _serve(uri: str, inp, out) -> None:
    import traceback

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    while True:
        try:
            message = pickle.load(inp)
        except EOFError:  # the parent is gone: everything it sent has been written
            return
        error = None
        if message[0] == "write":
            try:
                write_batch(client, message[1])
            except Exception:  # noqa: BLE001 - reported to the parent, which raises it
                error = traceback.format_exc()
        pickle.dump(error, out)
        out.flush()
        if message[0] == "close":
            return


def main(argv: Sequence[str] | None = None) -> int:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    argv = sys.argv[1:] if argv is None else list(argv)
    out = os.fdopen(os.dup(1), "wb")  # the protocol's channel; anything printed goes to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _serve(argv[0], sys.stdin.buffer, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
