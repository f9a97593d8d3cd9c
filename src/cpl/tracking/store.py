"""The MLflow store: its default location, experiments, runs, params and tags.

The default store is ``sqlite:///mlruns/mlflow.db`` with artifacts under ``mlruns/artifacts``.
``$MLFLOW_TRACKING_URI`` or ``tracking.uri`` override it.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock
    fcntl = None  # type: ignore[assignment]

from mlflow.entities import Param, RunTag
from mlflow.tracking import MlflowClient

from .uri import DEFAULT_TRACKING_URI, tracking_uri

__all__ = [
    "DEFAULT_TRACKING_URI",
    "tracking_uri",
    "get_client",
    "get_or_create_experiment",
    "start_run",
    "log_params",
    "set_tags",
    "git_commit",
    "store_lock",
    "write_rows",
]


def _sqlite_path(uri: str) -> Optional[Path]:
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :])
    return None


@contextlib.contextmanager
def store_lock(uri: Optional[str] = None) -> Iterator[None]:
    """An exclusive lock on a SQLite store (a ``.lock`` file beside it; other stores: no lock).

    Held while a store is created or migrated, a sweep's parent is found or created, and a cell is
    claimed, so that processes starting together do not race.
    """
    db = _sqlite_path(tracking_uri(uri))
    if db is None or fcntl is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.lock", "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


_READY: set[str] = set()


def get_client(uri: Optional[str] = None) -> MlflowClient:
    """A client of the store; a SQLite store is created (or migrated) once per process, under :func:`store_lock`."""
    uri = tracking_uri(uri)
    if _sqlite_path(uri) is None or uri in _READY:
        return MlflowClient(tracking_uri=uri)
    with store_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # creates the tables / runs alembic's migration
    _READY.add(uri)
    return client


def get_or_create_experiment(client: MlflowClient, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    db = _sqlite_path(client.tracking_uri)
    location = None
    if db is not None:  # keep artifacts beside the local database, under mlruns/
        location = (db.parent.resolve() / "artifacts" / name).as_uri()
    return client.create_experiment(name, artifact_location=location)


def git_commit(path: Optional[Path] = None) -> Optional[str]:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path or Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def start_run(
    client: MlflowClient,
    experiment: str,
    run_name: Optional[str] = None,
    tags: Optional[Mapping[str, str]] = None,
    parent_run_id: Optional[str] = None,
) -> str:
    """Create a run (nested under ``parent_run_id`` if given) and return its id."""
    tags = {k: str(v) for k, v in (tags or {}).items()}
    commit = git_commit()
    if commit:
        tags.setdefault("mlflow.source.git.commit", commit)
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(get_or_create_experiment(client, experiment), run_name=run_name, tags=tags)
    return run.info.run_id


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    items = [Param(k, "None" if v is None else str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i : i + 100])


#: MLflow's limit of metrics per log_batch call
MAX_ROWS = 1000


def write_rows(client: MlflowClient, batch) -> None:
    """Write ``[(run_id, [(key, value, timestamp_ms, step), ...]), ...]`` once, at most
    :data:`MAX_ROWS` rows a ``log_batch`` call (retries and spilling: :func:`cpl.tracking.writer.write_batch`)."""
    from mlflow.entities import Metric

    for run_id, rows in batch:
        for i in range(0, len(rows), MAX_ROWS):
            client.log_batch(run_id, metrics=[Metric(*row) for row in rows[i : i + MAX_ROWS]])


def set_tags(client: MlflowClient, run_id: str, tags: Mapping[str, Any]) -> None:
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
