"""Where runs are recorded and how to open them: the store's URI and the MLflow UI's addresses.

Imports nothing heavy (no MLflow), so the command line resolves a store and prints links at once.
The MLflow 3 UI opens an experiment in its GenAI view; ``workflowType=machine_learning`` opens the
model-training view (runs, metrics, compare), checked in headless Chromium by ``tests/test_ui_browser.py``.
"""

from __future__ import annotations

import os
from typing import Optional

__all__ = [
    "DEFAULT_TRACKING_URI",
    "DEFAULT_UI_ADDRESS",
    "tracking_uri",
    "ui_base",
    "experiment_url",
    "run_url",
    "compare_url",
]

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
#: where ``cpl ui`` (``mlflow ui``) serves a local store by default
DEFAULT_UI_ADDRESS = "http://127.0.0.1:5000"
_ML_VIEW = "workflowType=machine_learning"


def tracking_uri(uri: Optional[str] = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else :data:`DEFAULT_TRACKING_URI`."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def ui_base(uri: str, address: str = DEFAULT_UI_ADDRESS) -> str:
    """The UI's address for a store: the server itself for an ``http(s)`` store, else ``address`` (``cpl ui``).

    >>> ui_base("http://host:5000/"), ui_base("sqlite:///mlruns/mlflow.db")
    ('http://host:5000', 'http://127.0.0.1:5000')
    """
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else address.rstrip("/")


def experiment_url(base: str, experiment_id: str) -> str:
    """The experiment's runs in the UI's model-training view.

    >>> experiment_url("http://127.0.0.1:5000", "1")
    'http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning'
    """
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{_ML_VIEW}"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """A run's page in the UI's model-training view.

    >>> run_url("http://127.0.0.1:5000", "1", "abc")
    'http://127.0.0.1:5000/#/experiments/1/runs/abc?workflowType=machine_learning'
    """
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{_ML_VIEW}"


def compare_url(base: str, experiment_id: str, run_ids: list[str]) -> str:
    """The compare view of several runs (parallel coordinates, scatter, box and contour plots).

    >>> compare_url("http://h:1", "2", ["a", "b"])
    'http://h:1/#/compare-runs?runs=["a","b"]&experiments=["2"]&workflowType=machine_learning'
    """
    runs = ",".join(f'"{r}"' for r in run_ids)
    return f'{base.rstrip("/")}/#/compare-runs?runs=[{runs}]&experiments=["{experiment_id}"]&{_ML_VIEW}'
