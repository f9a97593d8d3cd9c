"""cpl: critical learning periods in deep linear networks, as a Lightning + MLflow framework.

Reproduces and extends Kleinman, Achille & Soatto, "Critical Learning Periods Emerge Even in
Deep Linear Networks" (ICLR 2024).
"""

from typing import Any

__all__ = ["ConfigError", "DivergenceError", "TrainResult", "load_config", "make_config", "train"]
__version__ = "0.1.0"

_EXPORTS = {
    "ConfigError": "config",
    "load_config": "config",
    "make_config": "config",
    "DivergenceError": "core.module",
    "TrainResult": "run",
    "train": "run",
}


def __getattr__(name: str) -> Any:
    # imported on first use, so that light submodules (the MLflow writer process) do not load torch
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'cpl' has no attribute {name!r}")
