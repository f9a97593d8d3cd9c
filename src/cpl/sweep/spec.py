"""The ``sweep:`` section of a conf, loading a sweep and expanding its grid into validated cells."""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from ..config import ConfigError, compose, family, parse_overrides, read_conf, require, translate
from ..config.hashing import config_hash
from ..config.hashing import digest as _digest
from ..config.naming import describe
from ..tracking.uri import tracking_uri

__all__ = [
    "SweepConfig",
    "Sweep",
    "Cell",
    "CellResult",
    "load_sweep",
    "make_sweep",
    "config_hash",
    "FORBIDDEN_GRID_KEYS",
]


#: grid keys a sweep may not vary
FORBIDDEN_GRID_KEYS = ("kind", "name", "tracking")


@dataclass
class SweepConfig:
    """The ``sweep:`` section of a sweep conf (see the module docstring)."""

    name: str = ""  #: sweep name; default: the conf name
    grid: Dict[str, Any] = field(default_factory=dict)  #: dotted key -> list of values
    group_by: Optional[str] = None  #: the key whose values make curves; default: first grid key but the onset
    onset_key: Optional[str] = "switch.at_step"  #: the deficit onset; null = no critical-period analysis
    metric: str = "test/final_error"  #: the cell metric of the table
    threshold: float = 0.05  #: critical-period length: first onset with relative error > threshold
    executor: str = "local"  #: "local" or "ray"
    processes: int = 1  #: local executor: 1 = in-process, n > 1 = n processes, 0 = one per core
    ray_address: Optional[str] = None  #: ray executor: null = start a local Ray instance
    ray_num_cpus: Optional[int] = None  #: CPUs of a local Ray instance; null = all
    ray_cpus_per_task: float = 1.0  #: CPUs Ray reserves for each task
    #: torch intra-op threads while a cell trains; null = torch's default. One thread is much
    #: faster for the small matrices of these experiments, above all on a busy machine.
    torch_threads: Optional[int] = 1
    #: train cells that can share a module (same depth, size, lr, ...) as the members of one run,
    #: cells differing only in onset sharing their pre-training trunk (cpl.core.members); every cell
    #: still gets its own child run
    batched: bool = True
    max_members: int = 64  #: most members of one batched run


@dataclass
class _SweepRoot:
    sweep: SweepConfig = field(default_factory=SweepConfig)


@dataclass(frozen=True)
class Cell:
    """One point of the grid: its values, its validated run config and that config's hash."""

    index: int
    values: Dict[str, Any]
    config: DictConfig
    config_hash: str


@dataclass
class CellResult:
    """What running (or resuming) a cell gave."""

    index: int
    config_hash: str
    status: str  #: FINISHED, FAILED or NOT_RUN
    metrics: Dict[str, float] = field(default_factory=dict)
    run_id: Optional[str] = None
    error: Optional[str] = None
    seconds: float = 0.0
    resumed: bool = False  #: read back from an earlier run of the sweep


@dataclass
class Sweep:
    """A loaded sweep: its settings, its base config and its validated cells."""

    settings: SweepConfig
    base: DictConfig
    cells: list[Cell]

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def grid(self) -> dict[str, list]:
        return self.settings.grid

    @property
    def sweep_hash(self) -> str:
        return _digest(sorted(c.config_hash for c in self.cells))


def _flat_grid(node: Any, prefix: str, source: str) -> dict[str, list]:
    out: dict[str, list] = {}
    if node is None:
        return out
    if not isinstance(node, (DictConfig, dict)):
        raise ConfigError(
            f"Invalid value for 'sweep.grid{'.' + prefix if prefix else ''}' (from {source}): got {node!r}; "
            "allowed: a mapping of dotted keys to lists, e.g. model.depth: [1, 2, 3]"
        )
    for key, value in node.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, (DictConfig, dict)):
            out.update(_flat_grid(value, full, source))
        elif isinstance(value, (ListConfig, list, tuple)):
            values = OmegaConf.to_container(value) if isinstance(value, ListConfig) else list(value)
            require(len(values) >= 1, f"sweep.grid.{full}", values, "a non-empty list of values")
            require(
                len({json.dumps(v, sort_keys=True, default=str) for v in values}) == len(values),
                f"sweep.grid.{full}",
                values,
                "a list without repeated values",
            )
            out[full] = values
        else:
            raise ConfigError(
                f"Invalid value for 'sweep.grid.{full}' (from {source}): got {value!r}; allowed: a list of "
                f"values, e.g. sweep.grid.{full}=[{value}]"
            )
    return out


def _nest(values: dict[str, Any]) -> dict:
    out: dict = {}
    for key, value in values.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _settings(raw: Any, over: Any, source: str, default_name: str) -> SweepConfig:
    """Merge the ``sweep`` sections of the conf and of the overrides into :class:`SweepConfig`."""
    grid: dict[str, list] = {}
    parts = []
    for node, src in ((raw, source), (over, "command line")):
        if node is None:
            continue
        if not isinstance(node, DictConfig):
            raise ConfigError(
                f"Invalid value for 'sweep' (from {src}): got {node!r}; allowed: a mapping with keys "
                f"{', '.join(SweepConfig.__dataclass_fields__)}"
            )
        node = node.copy()
        with open_dict(node):
            grid_node = node.pop("grid", None)
        grid.update(_flat_grid(grid_node, "", src))
        parts.append((node, src))
    cfg = OmegaConf.structured(_SweepRoot)
    for node, src in parts:
        try:
            cfg = OmegaConf.merge(cfg, {"sweep": node})
        except OmegaConfBaseException as exc:
            raise translate(exc, _SweepRoot, src) from None
    s: SweepConfig = OmegaConf.to_object(cfg.sweep)  # type: ignore[assignment]
    # the onset varies fastest (cells of one curve are neighbours), whatever order composition gave
    s.grid = {k: v for k, v in grid.items() if k != s.onset_key} | {k: v for k, v in grid.items() if k == s.onset_key}
    s.name = s.name or default_name
    _validate_settings(s)
    return s


def _validate_settings(s: SweepConfig) -> None:
    require(
        len(s.grid) >= 1,
        "sweep.grid",
        s.grid,
        "at least one key with a list of values, e.g. sweep.grid.model.depth=[1,2,3]",
    )
    for key in s.grid:
        require(
            not any(key == f or key.startswith(f + ".") for f in FORBIDDEN_GRID_KEYS),
            f"sweep.grid.{key}",
            s.grid[key],
            "a key of the run config other than kind, name and tracking.*",
        )
    keys = ", ".join(s.grid)
    if s.onset_key is not None:
        require(
            s.onset_key in s.grid,
            "sweep.onset_key",
            s.onset_key,
            f"one of the grid keys ({keys}), or null for no critical-period analysis",
        )
    if s.group_by is not None:
        require(
            s.group_by in s.grid and s.group_by != s.onset_key,
            "sweep.group_by",
            s.group_by,
            f"a grid key other than the onset key ({keys})",
        )
    else:
        others = [k for k in s.grid if k != s.onset_key]
        s.group_by = others[0] if others else None
    require(s.threshold >= 0, "sweep.threshold", s.threshold, "a number >= 0")
    require(s.executor in ("local", "ray"), "sweep.executor", s.executor, "local or ray")
    require(s.processes >= 0, "sweep.processes", s.processes, "an integer >= 0 (1 = in-process, 0 = one per core)")
    require(s.max_members >= 1, "sweep.max_members", s.max_members, "an integer >= 1")
    if s.torch_threads is not None:
        require(s.torch_threads >= 1, "sweep.torch_threads", s.torch_threads, "null or an integer >= 1")
    require(s.ray_cpus_per_task > 0, "sweep.ray_cpus_per_task", s.ray_cpus_per_task, "a number > 0")
    if s.executor == "ray":
        require(
            importlib.util.find_spec("ray") is not None,
            "sweep.executor",
            s.executor,
            "local (Ray is not installed: pip install 'cpl[ray]')",
        )


def _check_metric(s: SweepConfig, kind: str) -> None:
    """``sweep.metric`` must be a metric the family logs (a typo would give a table of NaN)."""
    patterns = getattr(family(kind).schema, "METRICS", None)
    if patterns is not None and s.metric != SweepConfig.metric:  # the default: a family may not log it (multipath)
        plain = ", ".join(p for p in patterns if re.fullmatch(r"[\w/]+", p))
        require(
            any(re.fullmatch(p, s.metric) for p in patterns),
            "sweep.metric",
            s.metric,
            f"a metric that kind={kind} logs, e.g. {plain} (patterns: {' | '.join(patterns)})",
        )


def _check_distinct(s: SweepConfig, cells: Sequence[Cell]) -> None:
    """Grid values that the schema reads as the same value (``lr=[1, 1.0]``) would run cells twice."""
    for key, raw in s.grid.items():
        typed = {json.dumps(c.values[key], sort_keys=True, default=str) for c in cells}
        require(
            len(typed) == len(raw),
            f"sweep.grid.{key}",
            raw,
            f"a list without repeated values (as this key's type reads them: {sorted(typed)})",
        )


def _expand(base: DictConfig, s: SweepConfig) -> list[Cell]:
    _check_metric(s, base.kind)
    cells = []
    keys = list(s.grid)
    for index, combo in enumerate(product(*(s.grid[k] for k in keys))):
        values = dict(zip(keys, combo))
        label = " ".join(f"{k}={v}" for k, v in values.items())
        try:
            cfg = compose(
                base, OmegaConf.create(_nest(values)), base.name, source="base conf", over_source="sweep.grid"
            )
        except ConfigError as exc:
            raise ConfigError(f"Sweep cell {index} ({label}): {exc}") from None
        cfg.tracking.run_name = describe(values)  # a child is named by its grid values: "depth=2 at_step=1000"
        values = {k: OmegaConf.select(cfg, k) for k in keys}  # typed by the schema
        cells.append(Cell(index=index, values=values, config=cfg, config_hash=config_hash(cfg)))
    _check_distinct(s, cells)
    return cells


def _absolute(uri: str) -> str:
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///") :]).resolve())
    return uri


def _prepare_base(base: DictConfig, s: SweepConfig) -> DictConfig:
    base = base.copy()
    require(
        base.tracking.enabled,
        "tracking.enabled",
        base.tracking.enabled,
        "true in a sweep (its runs are recorded in MLflow)",
    )
    require(
        base.trainer.ckpt_path is None,
        "trainer.ckpt_path",
        base.trainer.ckpt_path,
        "null in a sweep (every cell starts from scratch)",
    )
    # every cell, in whatever process or machine, logs to the same store and checkpoint folder
    base.tracking.uri = _absolute(tracking_uri(base.tracking.uri))
    base.trainer.checkpoint_dir = str(Path(base.trainer.checkpoint_dir).resolve())
    base.trainer.progress_bar = False
    return base


def load_sweep(name: str, overrides: Sequence[str] = (), directory: Path | None = None) -> Sweep:
    """Load the sweep conf ``conf/<name>.yaml`` with dotlist ``overrides`` and validate every cell.

    ``sweep.*`` overrides change the sweep (``sweep.grid.model.depth=[1,2]`` adds or replaces a
    grid key); all other overrides change the base config of every cell.

    Raises:
        ConfigError: unknown conf, misspelt key (in the sweep section, the base or the grid),
            wrong type, impossible value in any cell.
    """
    raw, path = read_conf(name, directory)
    over = parse_overrides(overrides)
    raw_sweep, over_sweep = (_pop(node, "sweep") for node in (raw, over))
    settings = _settings(raw_sweep, over_sweep, str(path), name)
    base = compose(raw, over, name, str(path))
    base = _prepare_base(base, settings)
    return Sweep(settings=settings, base=base, cells=_expand(base, settings))


def make_sweep(base: DictConfig, **sweep: Any) -> Sweep:
    """Build a sweep from a validated base config and the ``sweep`` settings as keywords (for code and tests).

    Example::

        >>> from cpl.config import make_config
        >>> sw = make_sweep(make_config(), grid={"model.depth": [1, 2], "switch.at_step": [0, 100]})
        >>> len(sw.cells), sw.settings.group_by
        (4, 'model.depth')
    """
    settings = _settings(OmegaConf.create(sweep), None, "arguments", base.name or "sweep")
    base = _prepare_base(base, settings)
    return Sweep(settings=settings, base=base, cells=_expand(base, settings))


def _pop(node: DictConfig, key: str) -> Any:
    with open_dict(node):
        return node.pop(key, None)
