"""The hash of a run's resolved config, and its result keys (what the hash covers).

Keys that do not change what a run computes (:data:`~cpl.config.sections.NON_RESULT_KEYS`) are left
out: a sweep finds its finished cells by this hash, and a checkpoint refuses to resume a run whose
hash differs (:mod:`cpl.core.checkpoint`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .callbacks import is_default
from .loader import flatten
from .registry import family
from .sections import NON_RESULT_KEYS

__all__ = ["config_hash", "result_config", "digest"]


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _result_data(cfg: DictConfig) -> dict:
    data = OmegaConf.to_container(cfg, resolve=True)
    # the family's own callbacks: hashes as before they were in the config
    if is_default(cfg, family(cfg.kind).callbacks):
        data.pop("callbacks", None)
    for key in NON_RESULT_KEYS:
        parent, _, leaf = key.rpartition(".")
        node = data
        for part in [p for p in parent.split(".") if p]:
            node = node.get(part, {})
        node.pop(leaf, None)
    return data


def config_hash(cfg: DictConfig) -> str:
    """Hash of a resolved run config, without the keys that do not change the result.

    >>> from cpl.config import make_config
    >>> config_hash(make_config(tracking={"uri": "sqlite:///a.db"})) == config_hash(make_config(tracking={"uri": "sqlite:///b.db"}))
    True
    """
    return digest(_result_data(cfg))


def result_config(cfg: DictConfig) -> dict[str, Any]:
    """The flattened keys that :func:`config_hash` covers (``{"model.depth": 3, ...}``).

    >>> "tracking.uri" in result_config(__import__("cpl.config").config.make_config())
    False
    """
    return flatten(_result_data(cfg))
