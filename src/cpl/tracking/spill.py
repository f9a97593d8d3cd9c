"""Metric rows the store did not take, kept in a local file, and ``cpl replay`` to write them back.

When the tracking store stays unreachable (:func:`cpl.tracking.writer.write_batch` gave up after its
retries and its time budget), the unsent rows are appended to a JSON-lines file beside the run's
checkpoint, and the run is marked FAILED with the tag ``cpl.spill_file`` naming it. If even the
final status could not be written, it is kept in the same file. Once the store is back::

    cpl replay checkpoints/<run id>/unsent_metrics.jsonl [tracking.uri=URI]

writes every row (MLflow's SQL stores ignore a row they already have, so replaying twice adds
nothing), then the statuses, and renames the file to ``*.replayed``.

File format, one JSON object a line: ``{"uri": URI}`` first, then ``{"run": ID, "rows": [[key,
value, timestamp_ms, step], ...]}`` and ``{"run": ID, "status": S, "tags": {...}}``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["StoreUnreachable", "spill_rows", "record_status", "read_spill", "replay", "main"]


class StoreUnreachable(RuntimeError):
    """The tracking store did not take metric rows in time; they are in the spill file ``path``."""

    def __init__(self, path: Optional[Path], rows: int, error: str):
        self.path, self.rows = path, rows
        where = f"they are in {path}: write them back with `cpl replay {path}`" if path else "they are lost"
        super().__init__(f"the tracking store did not take {rows} metric rows ({error}); {where}")


def _append(path: Path, uri: str, records: Sequence[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with open(path, "a") as f:
        if new:
            f.write(json.dumps({"uri": uri}) + "\n")
        for record in records:
            f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def spill_rows(path: Path, uri: str, batch: Sequence) -> int:
    """Append a batch ``[(run_id, [(key, value, timestamp, step), ...]), ...]``; returns its row count."""
    _append(Path(path), uri, [{"run": run_id, "rows": [list(r) for r in rows]} for run_id, rows in batch])
    return sum(len(rows) for _, rows in batch)


def record_status(path: Path, run_id: str, status: str, tags: dict, uri: str = "") -> None:
    """Keep a run's final status and tags for replay (the store did not take them)."""
    _append(Path(path), uri, [{"run": run_id, "status": status, "tags": dict(tags)}])


def read_spill(path: Path) -> tuple[str, list, list]:
    """``(uri, batch, statuses)`` of a spill file; raises ``ValueError`` naming a malformed line."""
    uri, batch, statuses = "", [], []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not a spill record ({exc.msg})") from None
            if "uri" in record:
                uri = uri or record["uri"]
            elif "rows" in record:
                batch.append((record["run"], [tuple(r) for r in record["rows"]]))
            elif "status" in record:
                statuses.append((record["run"], record["status"], record.get("tags", {})))
    return uri, batch, statuses


def replay(path: Path, uri: Optional[str] = None) -> tuple[int, int]:
    """Write a spill file's rows, then its statuses, into the store; ``(rows, statuses)`` written.

    The file is renamed ``*.replayed`` afterwards, so it is not replayed by accident.
    """
    from mlflow.tracking import MlflowClient

    from .store import set_tags, write_rows

    path = Path(path)
    found, batch, statuses = read_spill(path)
    client = MlflowClient(tracking_uri=uri or found)
    write_rows(client, batch)
    for run_id, status, tags in statuses:
        if tags:
            set_tags(client, run_id, tags)
        client.set_terminated(run_id, status)
    path.rename(path.with_name(path.name + ".replayed"))
    return sum(len(rows) for _, rows in batch), len(statuses)


USAGE = """\
usage: cpl replay PATH [tracking.uri=URI]

Write the metric rows (and final statuses) that a run spilled to PATH, because its tracking store
was unreachable, back into the store: the run's own store, or tracking.uri=URI. The run's tag
cpl.spill_file names PATH. Replaying twice adds no row twice; PATH becomes PATH.replayed.
"""


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``cpl replay PATH [tracking.uri=URI]``: 0 written, 1 the store failed, 2 bad arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or any(a in ("-h", "--help", "help") for a in argv):
        print(USAGE)
        return 0 if argv else 2
    paths = [a for a in argv if "=" not in a]
    opts = dict(a.split("=", 1) for a in argv if "=" in a)
    if len(paths) != 1 or set(opts) - {"tracking.uri"}:
        print(f"error: expected PATH [tracking.uri=URI], got {argv}; see cpl replay --help", file=sys.stderr)
        return 2
    path = Path(paths[0])
    if not path.is_file():
        print(f"error: no spill file {str(path)!r}; the run's tag cpl.spill_file names it", file=sys.stderr)
        return 2
    try:
        rows, statuses = replay(path, opts.get("tracking.uri"))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the store is still unreachable: say so in one line
        print(f"error: could not replay {path}: {type(exc).__name__}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    print(f"replayed {rows} metric rows and {statuses} run statuses from {path}")
    return 0
