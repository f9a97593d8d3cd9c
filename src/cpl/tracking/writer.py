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
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from .spill import StoreUnreachable, spill_rows
from .store import write_rows as _store_write

__all__ = ["MetricWriter", "Batch", "write_batch", "WritePolicy", "POLICY", "configure"]

Row = tuple  # (key, value, timestamp_ms, step)
Batch = list  # [(run_id, [Row, ...]), ...]
_MAX_ROWS = 1000  # MLflow's limit per log_batch call


@dataclass
class WritePolicy:
    """How :func:`write_batch` treats a store that fails: the time budget of one write (all its
    attempts), the retries within it, and where unsent rows go (set per run by :mod:`cpl.guard`)."""

    timeout_s: float = 30.0
    retries: int = 2
    spill_path: Optional[Path] = None
    unreachable: bool = False  #: the store already failed in this run: spill at once, wait no more
    rows: int = 0  #: rows handed to write_batch in this process (written or spilled)


POLICY = WritePolicy()


def configure(timeout_s: float, retries: int, spill_path: Optional[Path]) -> WritePolicy:
    """Set this process's :data:`POLICY` for the next run (a run starts with a reachable store)."""
    POLICY.timeout_s, POLICY.retries = float(timeout_s), int(retries)
    POLICY.spill_path, POLICY.unreachable = (Path(spill_path) if spill_path else None), False
    return POLICY


def _within(fn, seconds: float) -> None:
    """Run ``fn()``; raise ``TimeoutError`` if it takes longer than ``seconds`` (it is left behind, a
    daemon thread: SQL stores ignore a row written twice, so a late write does no harm)."""
    box: list = []

    def target() -> None:
        try:
            fn()
            box.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box.append(exc)

    t = threading.Thread(target=target, daemon=True, name="cpl-store-write")
    t.start()
    t.join(max(seconds, 0.0))
    if t.is_alive():
        raise TimeoutError(f"no answer within {seconds:.3g} s")
    if box and box[0] is not None:
        raise box[0]


def write_batch(client, batch: Batch, policy: Optional[WritePolicy] = None) -> None:
    """Write one batch, retrying within the policy's time budget; rows are let go only once written.

    Raises:
        StoreUnreachable: the store did not take every row in time; the unsent ones are in
            ``policy.spill_path`` (see :mod:`cpl.tracking.spill`).
    """
    p = policy or POLICY
    p.rows += sum(len(rows) for _, rows in batch)
    chunks = [(run_id, rows[i : i + _MAX_ROWS]) for run_id, rows in batch for i in range(0, len(rows), _MAX_ROWS)]
    deadline = time.monotonic() + p.timeout_s
    for n, chunk in enumerate(chunks):
        error = _write_chunk(client, chunk, p, deadline)
        if error is not None:
            p.unreachable = True
            rest = chunks[n:]
            if p.spill_path is not None:
                spill_rows(p.spill_path, getattr(client, "tracking_uri", ""), rest)
            raise StoreUnreachable(p.spill_path, sum(len(r) for _, r in rest), error)


def _write_chunk(client, chunk, p: WritePolicy, deadline: float) -> Optional[str]:
    """Write one chunk with retries until ``deadline``; None when written, else the last error."""
    if p.unreachable:
        return "the store failed earlier in this run"
    error = None
    for attempt in range(p.retries + 1):
        left = deadline - time.monotonic()
        if left <= 0:
            return error or f"no time left of tracking.timeout_s={p.timeout_s:g}"
        try:
            _within(lambda: _store_write(client, [chunk]), left)
            return None
        except Exception as exc:  # noqa: BLE001 - retried, then spilled
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        time.sleep(min(0.2 * 2**attempt, max(0.0, deadline - time.monotonic())))
    return error


class MetricWriter:
    """Parent side: send batches to a writer process; at most one batch is in flight.

    ``send`` first collects the acknowledgement of the previous batch (waiting only if the child
    is still writing it), so memory and the delay of the records stay bounded by one batch.

    A batch the child fails to write, or does not acknowledge within ``POLICY.timeout_s``, is
    written here by :func:`write_batch` (retries, then the spill file), and later ones too.

    Raises:
        StoreUnreachable: from :func:`write_batch`, when the store does not take a batch in time.
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
            ready, _, _ = select.select([self._proc.stdout], [], [], POLICY.timeout_s)
            error = pickle.load(self._proc.stdout) if ready else "no answer in time"
        except (EOFError, OSError, pickle.UnpicklingError, ValueError):
            error = "the writer process is gone"
        finally:
            self.wait_seconds += time.perf_counter() - t0
        if error is not None:  # the child failed or hangs: retry here, then spill (write_batch)
            self._lost()
            return
        self._inflight = None

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
                _store_write(client, message[1])
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
