"""MLflow tracking: the store (:mod:`~cpl.tracking.store`), the batched member logger
(:mod:`~cpl.tracking.logger`) and the helper-process writer (:mod:`~cpl.tracking.writer`).

Names are imported on first use, so the writer process (``python -m cpl.tracking.writer``) loads
neither torch nor Lightning.
"""

from typing import Any

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
    "MemberRouterLogger",
    "experiment_url",
    "run_url",
    "compare_url",
    "ui_base",
]

_EXPORTS = {name: "store" for name in __all__}
_EXPORTS["MemberRouterLogger"] = "logger"
_EXPORTS.update({name: "uri" for name in ("experiment_url", "run_url", "compare_url", "ui_base")})


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'cpl.tracking' has no attribute {name!r}")
