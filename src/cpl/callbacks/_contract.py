"""The small, checked contracts between cpl callbacks and LightningModules: what a callback reads
off a module (a matrix, a basis) and how it is named in a config.

A *target* is one of
- a callable ``(pl_module) -> value``;
- a dotted path from the LightningModule: an attribute, property or method (``"end_to_end"``), a
  parameter or buffer (``"net.0.weight"``), a submodule with a 2-D ``weight`` (``"net.0"``);
  a path starting with ``datamodule.`` reads the trainer's DataModule (``"datamodule.teacher_basis"``);
- for matrices, a list of submodule paths whose weights multiply into the end-to-end map
  (``["net.0", "net.1", "net.2"]``, first layer first: ``W = W_L ... W_1``).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import nn

from ..core.lightning_compat import attached_trainer
from ..core.linalg import as_members

__all__ = ["require_attr", "resolve", "resolve_path", "target_name", "MatrixTarget", "Target"]

#: what a matrix target may be (see the module docstring)
Target = Union[str, Sequence[str], Callable[[Any], Any]]


def require_attr(pl_module: Any, name: str, callback: str, what: str) -> Any:
    """Return ``pl_module.<name>`` or fail with a sentence naming the callback and the contract."""
    if not hasattr(pl_module, name):
        raise AttributeError(
            f"{callback} needs a LightningModule with {what} (`{name}`); {type(pl_module).__name__} has none."
        )
    return getattr(pl_module, name)


def resolve(pl_module: Any, attr: str, **kwargs: Any) -> Any:
    """``pl_module.<attr>``, called (with ``kwargs``) if it is a method."""
    value = getattr(pl_module, attr)
    return value(**kwargs) if callable(value) and not isinstance(value, nn.Module) else value


def target_name(target: Any) -> Any:
    """A stable, printable name of a target (for ``state_key`` and messages)."""
    if callable(target) and not isinstance(target, str):
        fn = getattr(target, "func", target)  # functools.partial
        return f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__name__)}"
    if isinstance(target, str):
        return target
    return [str(t) for t in target]


def _own_names(obj: Any) -> list[str]:
    """Public names that the object's own classes define (not torch's or Lightning's)."""
    names: list[str] = []
    for cls in type(obj).__mro__:
        if cls.__module__.split(".")[0] in ("torch", "lightning", "pytorch_lightning", "builtins", "abc"):
            continue
        names += [n for n in vars(cls) if not n.startswith("_") and n not in names]
    return names


def _children(obj: Any) -> list[str]:
    names: list[str] = []
    if isinstance(obj, nn.Module):
        names += [n for n, _ in obj.named_children()] + [n for n, _ in obj.named_parameters(recurse=False)]
        names += [n for n, _ in obj.named_buffers(recurse=False)]
    names += [n for n in _own_names(obj) if n not in names]
    names += [n for n in vars(obj) if not n.startswith("_") and n not in names] if hasattr(obj, "__dict__") else []
    return names[:30]


def resolve_path(pl_module: Any, path: str, callback: str, what: str) -> Any:
    """The object at a dotted ``path`` from the module (``datamodule.`` = the trainer's DataModule)."""
    obj, parts, walked = pl_module, path.split("."), type(pl_module).__name__
    if parts[0] == "datamodule" and not hasattr(pl_module, "datamodule"):
        trainer = attached_trainer(pl_module)
        obj = getattr(trainer, "datamodule", None) if trainer is not None else None
        if obj is None:
            raise AttributeError(f"{callback} reads {what} from `{path}`, but the trainer has no DataModule.")
        parts, walked = parts[1:], type(obj).__name__
    for part in parts:
        if not hasattr(obj, part):
            raise AttributeError(
                f"{callback} needs {what} at `{path}`; {walked} has no `{part}`. It has: {_children(obj)}."
            )
        obj, walked = getattr(obj, part), f"{walked}.{part}"
    return obj


def _weight_of(obj: Any, path: str, callback: str) -> torch.Tensor:
    weight = getattr(obj, "weight", None)
    if callable(weight) and not isinstance(weight, torch.Tensor):
        weight = weight()
    if not isinstance(weight, torch.Tensor) or weight.dim() not in (2, 3):
        layers = [n for n, m in obj.named_modules() if n and isinstance(getattr(m, "weight", None), torch.Tensor)]
        raise ValueError(
            f"{callback}: `{path}` is a {type(obj).__name__} without a 2-D `weight`; give its layers as a list "
            f"of paths whose weights multiply into the map, e.g. {[f'{path}.{n}' for n in layers[:4]]}, or the "
            "parameter path of one weight."
        )
    return weight


class MatrixTarget:
    """A matrix read off a module: ``target`` as in the module docstring, ``kwargs`` for a method.

    Calling it returns a tensor ``(M, n, m)`` (members first; ``(n, m)`` reads as one member).
    """

    def __init__(self, target: Target, kwargs: Optional[dict] = None, callback: str = "SingularValueLogger"):
        if isinstance(target, str):
            self.kind = "path"
        elif callable(target):
            self.kind = "callable"
        elif isinstance(target, Sequence) and len(target) > 0 and all(isinstance(t, str) for t in target):
            self.kind, target = "layers", [str(t) for t in target]
        else:
            raise ValueError(
                f"Expected `matrix` to be a callable, a dotted path or a non-empty list of layer paths, got {target!r}"
            )
        self.target, self.kwargs, self.callback = target, dict(kwargs or {}), callback
        self._signature_of, self._takes_members = None, False

    @property
    def name(self) -> Any:
        return target_name(self.target)

    def check(self, pl_module: Any) -> None:
        """Resolve the target once and check the matrix (shapes of chained layers), or raise."""
        if self.kind == "callable":
            return  # called at the first readout; the result's shape is checked there
        if self.kind == "layers":
            weights = [
                _weight_of(resolve_path(pl_module, p, self.callback, "a layer"), p, self.callback) for p in self.target
            ]
            for (a, wa), (b, wb) in zip(zip(self.target, weights), zip(self.target[1:], weights[1:])):
                if wb.shape[-1] != wa.shape[-2]:
                    raise ValueError(
                        f"{self.callback}: the layers {self.target} do not chain: `{b}` takes {wb.shape[-1]} inputs "
                        f"but `{a}` gives {wa.shape[-2]} outputs (list them first layer first)."
                    )
            return
        value = resolve_path(pl_module, self.target, self.callback, "a matrix to analyse")
        if isinstance(value, nn.Module):
            _weight_of(value, self.target, self.callback)

    def takes_members(self, fn: Any) -> bool:
        key = getattr(fn, "__func__", fn)
        if self._signature_of is not key:  # inspect.signature costs tens of microseconds: once per method
            try:
                params = inspect.signature(fn).parameters
            except (TypeError, ValueError):
                params = {}
            self._signature_of, self._takes_members = key, "members" in params
        return self._takes_members

    def __call__(self, pl_module: Any, members: Optional[list[int]] = None) -> tuple[torch.Tensor, bool]:
        """``(matrices, selected)``: ``selected`` is True when only ``members`` were computed."""
        if self.kind == "callable":
            return self._check_result(self.target(pl_module)), False
        if self.kind == "layers":
            weights = [
                _weight_of(resolve_path(pl_module, p, self.callback, "a layer"), p, self.callback) for p in self.target
            ]
            w = weights[0]
            for f in weights[1:]:
                w = torch.matmul(f, w)
            return self._check_result(w), False
        value = resolve_path(pl_module, self.target, self.callback, "a matrix to analyse")
        if isinstance(value, nn.Module):
            return self._check_result(_weight_of(value, self.target, self.callback)), False
        if callable(value) and not isinstance(value, torch.Tensor):
            if members is not None and self.takes_members(value):
                return self._check_result(value(members=members, **self.kwargs)), True
            value = value(**self.kwargs)
        return self._check_result(value), False

    def _check_result(self, value: Any) -> torch.Tensor:
        if not isinstance(value, torch.Tensor) or value.dim() not in (2, 3):
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(
                f"{self.callback}: the matrix `{self.name}` must be a tensor of shape (n, m) or (E, n, m), got {got}"
            )
        return as_members(value.detach())
