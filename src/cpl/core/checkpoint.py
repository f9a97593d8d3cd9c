"""Checkpoints you can trust: atomic writes, finite weights only, and the config they were made with.

:class:`SafeCheckpointIO` is a Lightning ``CheckpointIO`` plugin. It writes a temporary file beside
the target, fsyncs it and renames it over the target (an interrupted write leaves the previous
checkpoint whole, never a truncated one), refuses to write weights that are not finite (a diverged
run leaves no NaN checkpoint behind), and stores the run's config (its hash and its flattened
result keys) under ``"cpl"``. :func:`check_resume` compares that config with a resumed run's and
names the keys that differ; :func:`load` answers a truncated or corrupt file in one line.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

__all__ = ["CheckpointError", "SafeCheckpointIO", "atomic_save", "load", "check_resume", "finite"]


class CheckpointError(ValueError):
    """A checkpoint cannot be used: missing, truncated, corrupt, or written with another config."""


def finite(state: Any) -> bool:
    """Whether every floating-point tensor in a (nested) state dict is finite."""
    if isinstance(state, torch.Tensor):
        return not state.is_floating_point() or bool(torch.isfinite(state).all())
    if isinstance(state, dict):
        return all(finite(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return all(finite(v) for v in state)
    return True


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - a platform without directory handles
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load(path: str | Path, map_location: Any = "cpu") -> dict:
    """Load a checkpoint; a missing, truncated or corrupt file raises :class:`CheckpointError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling error of a damaged file
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        raise CheckpointError(f"Checkpoint {str(path)!r} is truncated or corrupt ({reason[:200]})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"Checkpoint {str(path)!r} is not a Lightning checkpoint (no state_dict)")
    return ckpt


def check_resume(path: str | Path, config: dict[str, Any], config_hash: str, force: bool = False) -> dict:
    """Load the checkpoint ``path`` and check it was written with ``config`` (flattened result keys).

    Raises:
        CheckpointError: the file cannot be loaded, or (unless ``force``) its config differs; the
            message names every key that differs, with both values.
    """
    ckpt = load(path)
    saved = ckpt.get("cpl")
    if saved is None:
        if not force:
            raise CheckpointError(
                f"Checkpoint {str(path)!r} has no config to compare (not written by cpl); pass --force to resume anyway"
            )
        return ckpt
    if saved.get("config_hash") != config_hash and not force:
        old = saved.get("config", {})
        keys = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
        diff = ", ".join(f"{k}: {old.get(k)!r} -> {config.get(k)!r}" for k in keys[:8])
        more = f" and {len(keys) - 8} more" if len(keys) > 8 else ""
        raise CheckpointError(
            f"Checkpoint {str(path)!r} was written with a different config ({diff}{more}); resume with the same "
            "config, or pass --force"
        )
    return ckpt


class SafeCheckpointIO(TorchCheckpointIO):
    """Atomic, finite-only checkpoints carrying the run's config (see the module docstring).

    Args:
        meta: stored under ``"cpl"`` in every checkpoint: ``{"config_hash": ..., "config": {...}}``.
    """

    def __init__(self, meta: Optional[dict] = None):
        super().__init__()
        self.meta = meta
        self.refused: list[str] = []  #: paths not written because the weights were not finite

    def save_checkpoint(self, checkpoint: dict, path, storage_options: Optional[Any] = None) -> None:
        if not finite(checkpoint.get("state_dict", {})):
            self.refused.append(str(path))
            warnings.warn(f"Not writing checkpoint {path}: the weights are not finite", stacklevel=2)
            return
        if self.meta is not None:
            checkpoint = {**checkpoint, "cpl": self.meta}
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path, map_location: Optional[Any] = None, weights_only: Optional[bool] = None) -> dict:
        return load(path, map_location if map_location is not None else "cpu")
