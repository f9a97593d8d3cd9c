"""cpl: critical learning periods in deep linear networks, as a Lightning + MLflow framework.

Reproduces and extends Kleinman, Achille & Soatto, "Critical Learning Periods Emerge Even in
Deep Linear Networks" (ICLR 2024).
"""

from .config import ConfigError, load_config, make_config
from .modules.base import DivergenceError
from .run import TrainResult, train

__all__ = ["ConfigError", "DivergenceError", "TrainResult", "load_config", "make_config", "train"]
__version__ = "0.1.0"
