"""Run names and tags that say what differs: ``matcomp_rank10to5 depth=4 lr=0.1``.

A run started with overrides is named after its conf and the overrides that change its result
(each by the shortest part of its key that is still unambiguous); every override is also a tag
``cpl.override.<key>``. A sweep's children are named by their grid values the same way.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping, Sequence

from .sections import NON_RESULT_KEYS

__all__ = ["short_labels", "format_value", "describe", "run_name", "override_tags", "MAX_RUN_NAME"]

#: longest run name written (MLflow stores up to 250 characters)
MAX_RUN_NAME = 250
#: characters MLflow does not allow in a tag key
_TAG_CHARS = re.compile(r"[^\w\-. /]")


#: leaves that say little without their section (``ode.enabled``, ``deficit.start``): kept with it
GENERIC_LEAVES = ("enabled", "start", "end", "kind", "mode", "pathway", "every_n_steps", "name")


def short_labels(keys: Sequence[str]) -> dict[str, str]:
    """Each dotted key's shortest trailing part that no other key ends with (with its section for
    the generic leaves of :data:`GENERIC_LEAVES`).

    >>> short_labels(["model.depth", "optim.lr", "deficit.start", "ode.enabled"])
    {'model.depth': 'depth', 'optim.lr': 'lr', 'deficit.start': 'deficit.start', 'ode.enabled': 'ode.enabled'}
    """
    out = {}
    for key in keys:
        parts = key.split(".")
        label = key
        for n in range(2 if parts[-1] in GENERIC_LEAVES else 1, len(parts) + 1):
            candidate = ".".join(parts[-n:])
            if not any(o != key and (o == candidate or o.endswith("." + candidate)) for o in keys):
                label = candidate
                break
        out[key] = label
    return out


def format_value(value: Any) -> str:
    """A value as it reads in a name: ``0.1``, ``1e-05``, ``[1,2]``, ``null``.

    >>> [format_value(v) for v in (4, 0.1, 1e-5, True, None, [1, 2], "b")]
    ['4', '0.1', '1e-05', 'true', 'null', '[1,2]', 'b']
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


#: keys left out of run names: they change how a run is recorded, not what it computes
UNNAMED_KEYS = (*NON_RESULT_KEYS, "log.figures")


def _result_key(key: str) -> bool:
    return not any(key == k or key.startswith(k + ".") for k in UNNAMED_KEYS)


def describe(values: Mapping[str, Any]) -> str:
    """``key=value`` pairs with short keys, in order: ``depth=2 at_step=1000``.

    >>> describe({"model.depth": 2, "switch.at_step": 1000})
    'depth=2 at_step=1000'
    """
    labels = short_labels(list(values))
    return " ".join(f"{labels[k]}={v if isinstance(v, str) else format_value(v)}" for k, v in values.items())


def _pairs(overrides: Sequence[str]) -> dict[str, str]:
    """``{key: value}``; ``+key=value`` (add) counts as ``key=value`` and ``~key`` (remove) as ``key=removed``.

    >>> _pairs(["model.depth=4", "+callbacks.ode.every_n_steps=5", "~callbacks.svs"])
    {'model.depth': '4', 'callbacks.ode.every_n_steps': '5', 'callbacks.svs': 'removed'}
    """
    pairs: dict[str, str] = {}
    for item in overrides:
        key, eq, value = item.partition("=")
        key = key.strip()
        if key.startswith("~"):
            pairs[key.lstrip("~")] = "removed"
        else:
            pairs[key.lstrip("+")] = value.strip()
    return pairs


def run_name(conf: str, overrides: Sequence[str] = ()) -> str:
    """The name of a run of ``conf`` started with ``key=value`` overrides: the conf, then the
    overrides that change the result (not ``tracking.*``, checkpoints, figures or the progress bar).

    >>> run_name("matcomp_rank10to5", ["model.depth=4", "optim.lr=0.1", "tracking.uri=sqlite:///x.db"])
    'matcomp_rank10to5 depth=4 lr=0.1'
    """
    pairs = {k: v for k, v in _pairs(overrides).items() if _result_key(k) and not k.startswith("sweep.")}
    return " ".join(p for p in (conf, describe(pairs)) if p)[:MAX_RUN_NAME]


def override_tags(overrides: Sequence[str]) -> dict[str, str]:
    """One tag per override: ``{"cpl.override.model.depth": "4"}`` (characters MLflow does not take
    in a tag key become ``_``).

    >>> override_tags(["model.depth=4", "~callbacks.svs"])
    {'cpl.override.model.depth': '4', 'cpl.override.callbacks.svs': 'removed'}
    """
    return {f"cpl.override.{_TAG_CHARS.sub('_', k)}": v[:5000] for k, v in _pairs(overrides).items()}
