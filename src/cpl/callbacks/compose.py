"""Callbacks (and any other object) from ``_target_`` nodes such as ``callbacks/*.yaml``.

A node is a mapping with ``_target_`` (the import path of a class) and its constructor
arguments; a nested node (e.g. ``ODEReference``'s ``reference``) is built the same way. The nodes
are instantiated by `jsonargparse <https://jsonargparse.readthedocs.io>`_ (the library behind
LightningCLI), which checks every argument against the class's signature and type hints. Needs the
``yaml`` extra: ``pip install 'cpl[yaml]'``. Hydra users can pass the same files to
``hydra.utils.instantiate`` instead.

Example::

    >>> cb = instantiate({"_target_": "cpl.callbacks.TaskSwitch", "at_step": [40]})
    >>> type(cb).__name__, cb.at_steps
    ('TaskSwitch', [40])
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

__all__ = ["instantiate", "load_callbacks", "to_class_spec"]


def to_class_spec(node: Any) -> Any:
    """A ``_target_`` tree as jsonargparse's ``{"class_path": ..., "init_args": {...}}`` tree.

    >>> to_class_spec({"_target_": "a.B", "x": 1, "ref": {"_target_": "a.C"}})
    {'class_path': 'a.B', 'init_args': {'x': 1, 'ref': {'class_path': 'a.C', 'init_args': {}}}}
    """
    if isinstance(node, Mapping):
        if "_target_" in node:
            args = {k: to_class_spec(v) for k, v in node.items() if k != "_target_"}
            return {"class_path": str(node["_target_"]), "init_args": args}
        return {k: to_class_spec(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [to_class_spec(v) for v in node]
    return node


def _plain(node: Any) -> Any:
    """OmegaConf containers as plain dicts/lists (resolved); anything else unchanged."""
    if type(node).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(node, resolve=True)
    return node


def _import(path: str, key: str) -> type:
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(
            f"Invalid value for '{key}._target_': got {path!r}; allowed: the import path of a class ({exc})"
        ) from None


def instantiate(node: Any, key: str = "callback", **overrides: Any) -> Any:
    """The object described by a ``_target_`` node, with ``overrides`` replacing its arguments.

    Raises:
        ValueError: no ``_target_``, a target that does not import, an argument the class does not
            take or of the wrong type (one line naming ``key``, the class and the problem).
        ImportError: jsonargparse is not installed (``pip install 'cpl[yaml]'``).
    """
    node = _plain(node)
    if not isinstance(node, Mapping) or not isinstance(node.get("_target_"), str):
        raise ValueError(f"Invalid value for '{key}': got {node!r}; allowed: a mapping with a '_target_' class path")
    try:
        from jsonargparse import ArgumentParser
    except ImportError:  # pragma: no cover - depends on the install
        raise ImportError("Building callbacks from YAML needs jsonargparse: pip install 'cpl[yaml]'") from None
    cls = _import(node["_target_"], key)
    spec = to_class_spec({**node, **overrides})
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--obj", type=cls)
    try:
        return parser.instantiate(parser.parse_object({"obj": spec})).obj
    except Exception as exc:  # argparse.ArgumentError, or the class's own ValueError/TypeError
        detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        detail = detail.replace('Parser key "obj": ', "")
        raise ValueError(f"Invalid value for '{key}' ({node['_target_']}): {detail}") from None


def load_callbacks(
    names: Sequence[str],
    directory: Optional[str | Path] = None,
    overrides: Optional[Mapping[str, Mapping[str, Any]]] = None,
) -> list[Any]:
    """Callbacks from ``<directory>/<name>.yaml`` files in the style of lightning-hydra-template's
    ``configs/callbacks/`` (each file: ``<name>: {_target_: ..., arg: value, ...}``).

    Args:
        names: file names without ``.yaml`` (e.g. ``["singular_values", "task_switch"]``).
        directory: the folder of the files; default: the repository's top-level ``callbacks/``.
        overrides: per file name, arguments replacing the file's (``{"task_switch": {"at_step": 40}}``).

    Raises:
        ValueError: a missing file, a file without its ``<name>:`` node, a bad argument (see :func:`instantiate`).
    """
    import yaml

    folder = Path(directory) if directory is not None else Path(__file__).resolve().parents[3] / "callbacks"
    out = []
    for name in names:
        path = folder / f"{name}.yaml"
        if not path.is_file():
            found = ", ".join(sorted(p.stem for p in folder.glob("*.yaml"))) or "(none)"
            raise ValueError(f"No callback file {path}; available in {folder}: {found}")
        data = yaml.safe_load(path.read_text()) or {}
        if name not in data:
            raise ValueError(f"{path}: expected a top-level '{name}:' node, got {list(data)}")
        out.append(instantiate(data[name], key=f"callbacks.{name}", **dict((overrides or {}).get(name, {}))))
    return out
