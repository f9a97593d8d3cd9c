"""One guard over a run's whole life: every way out of a run is a final MLflow status.

:class:`RunGuard` is entered before a run's MLflow runs are created and left after their last
artifact is written. Whatever happens in between ends in exactly one status per run:

- FINISHED: :meth:`RunGuard.finish` after the run's last artifact;
- FAILED: any exception (a divergence, a full disk while logging figures, a store that stays
  unreachable), the reason in the tags ``cpl.status_message`` and ``cpl.failure_reason``;
- KILLED: SIGINT or SIGTERM (both raise :class:`RunInterrupted` while the guard is active, so a
  SIGTERM ends the process non-zero, like Ctrl-C).

Signals that arrive while a run is being created (:meth:`RunGuard.critical`) are held until the
run's id is known, so no run is created behind the guard's back. Before any run is created,
:func:`precheck` answers in one line what can be known without training: the accelerator, the
tracking URI (syntax, and whether a server answers within ``tracking.timeout_s``), a writable
checkpoint folder, the memory of the batched parameters and a resume checkpoint's config.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from omegaconf import DictConfig

from .config import ConfigError, family
from .tracking import checks, writer
from .tracking.spill import StoreUnreachable, record_status

__all__ = [
    "RunGuard",
    "RunInterrupted",
    "precheck",
    "interrupt_signals",
    "held_signals",
    "terminate_running",
    "exit_code",
]


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a run (its MLflow runs are KILLED); ``signum`` says which."""

    def __init__(self, message: str = "", signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum, self.message = signum, message


def exit_code(exc: BaseException) -> int:
    """The shell's exit code of a process stopped by ``exc``: 128 + the signal (130 Ctrl-C, 143 SIGTERM)."""
    return 128 + int(getattr(exc, "signum", signal.SIGINT))


class _Signals:
    """SIGINT and SIGTERM raise :class:`RunInterrupted`, or wait while a critical section runs."""

    def __init__(self) -> None:
        self.depth, self.held, self.pending = 0, 0, None
        self.previous: dict[int, Any] = {}

    def handler(self, signum, frame) -> None:
        if self.held:
            self.pending = signum
            return
        name = signal.Signals(signum).name
        raise RunInterrupted(f"interrupted by {name}", signum)

    def release(self) -> None:
        self.held -= 1
        if not self.held and self.pending is not None:
            signum, self.pending = self.pending, None
            self.handler(signum, None)


_SIGNALS = _Signals()


@contextlib.contextmanager
def interrupt_signals() -> Iterator[_Signals]:
    """Within the block (main thread only), SIGINT and SIGTERM raise :class:`RunInterrupted`."""
    if threading.current_thread() is not threading.main_thread():
        yield _SIGNALS
        return
    s = _SIGNALS
    if s.depth == 0:
        s.previous = {sig: signal.signal(sig, s.handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    s.depth += 1
    try:
        yield s
    finally:
        s.depth -= 1
        for sig, old in s.previous.items():  # Lightning leaves SIGINT ignored after an interrupt: re-arm
            signal.signal(sig, old if s.depth == 0 else s.handler)


@contextlib.contextmanager
def held_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM during the block; one that arrived is raised at its end."""
    _SIGNALS.held += 1
    try:
        yield
    finally:
        _SIGNALS.release()


class RunGuard:
    """A run's whole life as one ``with`` block; on the way out every unfinished run gets its status.

    Example::

        with RunGuard() as guard:
            with guard.critical():
                run_id = create_the_run()
                guard.add(client, run_id)
            ... train, log ...
            guard.finish(run_id)
    """

    def __init__(self) -> None:
        self.client = None
        self.run_ids: list[str] = []
        self.finished: set[str] = set()
        self.loggers: list = []
        self.spill_path: Optional[Path] = None
        self.trainer = None  #: the Lightning trainer, once there is one (for the step reached)
        self.checkpoint: Optional[Path] = None  #: the run's ``last.ckpt``, once known
        self.resumable = True  #: whether ``trainer.ckpt_path`` can resume it (one member, not a batch)
        self._signals = interrupt_signals()

    def __enter__(self) -> "RunGuard":
        self._signals.__enter__()
        return self

    def critical(self):
        """A block that signals do not cut in two (creating a run and registering its id)."""
        return held_signals()

    def spill_to(self, timeout_s: float, retries: int, path: Path) -> None:
        """Metric writes of this run: ``timeout_s`` for each (retries included), unsent rows to ``path``."""
        writer.configure(timeout_s, retries, path)

    def add(self, client, run_id: str) -> None:
        self.client = client
        self.run_ids.append(run_id)

    def finish(self, run_id: str) -> None:
        with self.critical():
            self.client.set_terminated(run_id, "FINISHED")
            self.finished.add(run_id)

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc is not None:
                _SIGNALS.held += 1  # a second Ctrl-C must not stop the marking
                try:
                    self._close(exc)
                finally:
                    _SIGNALS.held -= 1
                    _SIGNALS.pending = None
        finally:
            writer.configure(writer.POLICY.timeout_s, writer.POLICY.retries, None)
            self._signals.__exit__(None, None, None)
        return False

    def _close(self, exc: BaseException) -> None:
        killed = isinstance(exc, KeyboardInterrupt)
        status = "KILLED" if killed else "FAILED"
        for lg in self.loggers:
            try:
                lg.flush()
            except StoreUnreachable as spilled:
                self.spill_path = spilled.path
            except Exception as err:  # noqa: BLE001 - keep the run's own error; still mark the run
                warnings.warn(f"Could not write the last metrics of the run: {err}", stacklevel=2)
        if isinstance(exc, StoreUnreachable):
            self.spill_path = exc.path
        if killed:
            message = self._killed_message(exc)
            if isinstance(exc, RunInterrupted):
                exc.message = message
        else:
            message = f"{type(exc).__name__}: {exc}".splitlines()[0]
        tags = {"cpl.status_message": message[:5000]}
        if not killed:
            tags["cpl.failure_reason"] = type(exc).__name__
        if self.spill_path is not None:
            tags["cpl.spill_file"] = str(self.spill_path)
        for run_id in self.run_ids:
            if run_id not in self.finished:
                _terminate(self.client, run_id, status, tags, self.spill_path)

    def _killed_message(self, exc: BaseException) -> str:
        """Where the run stopped and how to go on: the real checkpoint, or why there is none."""
        message = getattr(exc, "message", "") or "interrupted"
        if self.trainer is not None:
            message += f" at step {self.trainer.global_step}"
        if self.checkpoint is not None and self.checkpoint.is_file():
            if self.resumable:
                return f"{message}; resume with trainer.ckpt_path={self.checkpoint}"
            return f"{message}; a batched run resumes by running its sweep again"
        return f"{message}; no checkpoint was written, start the run again"


def _terminate(client, run_id: str, status: str, tags: dict[str, str], spill_path: Optional[Path]) -> None:
    """Tag and terminate a run; if the store does not take it, the spill file keeps it for ``cpl replay``."""
    from .tracking.store import set_tags

    try:
        set_tags(client, run_id, tags)
        client.set_terminated(run_id, status)
    except Exception as err:  # noqa: BLE001 - the store is gone: keep the status for replay
        if spill_path is None:
            warnings.warn(f"Could not mark run {run_id} {status}: {err}", stacklevel=2)
            return
        record_status(spill_path, run_id, status, tags)


def terminate_running(client, experiment_id: str, parent_run_id: str, status: str, message: str) -> int:
    """Mark every child of ``parent_run_id`` still RUNNING with ``status`` (a cancelled sweep); returns how many."""
    from .tracking.store import set_tags

    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'",
        max_results=5000,
    )
    for run in runs:
        set_tags(client, run.info.run_id, {"cpl.status_message": message})
        client.set_terminated(run.info.run_id, status)
    return len(runs)


def _available_memory() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _check_accelerator(cfg: DictConfig) -> None:
    acc = cfg.trainer.accelerator
    if acc in ("gpu", "cuda", "mps"):
        import torch

        ok = torch.cuda.is_available() if acc != "mps" else torch.backends.mps.is_available()
        if not ok:
            raise ConfigError(
                f"Invalid value for 'trainer.accelerator': got {acc!r}; allowed: cpu or auto "
                f"(no {'MPS' if acc == 'mps' else 'CUDA'} device is available on this machine)"
            )


def _check_memory(cfgs: Sequence[DictConfig]) -> None:
    estimate = getattr(family(cfgs[0].kind).schema, "memory_bytes", None)
    free = _available_memory()
    if estimate is None or free is None:
        return
    need = sum(int(estimate(c)) for c in cfgs)
    if need > free:
        key = "task.size" if cfgs[0].kind == "matcomp" else "model.width"
        raise ConfigError(
            f"Invalid value for '{key}': got {_value(cfgs[0], key)}; allowed: a size whose parameters, gradients "
            "and data fit in memory "
            f"(needs ~{need / 2**30:.1f} GiB for {len(cfgs)} member(s), {free / 2**30:.1f} GiB available)"
        )


def _value(cfg: DictConfig, key: str) -> str:
    from omegaconf import OmegaConf

    return repr(OmegaConf.select(cfg, key))


def _check_checkpoint_dir(cfg: DictConfig) -> None:
    path = Path(cfg.trainer.checkpoint_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".cpl-write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"Invalid value for 'trainer.checkpoint_dir': got {str(path)!r}; allowed: a folder this process can "
            f"write ({exc.strerror or exc})"
        ) from None


def precheck(cfgs: Sequence[DictConfig]) -> None:
    """Everything checkable before a run is created; raises :class:`ConfigError` (one line).

    Checks the accelerator, the tracking URI (syntax; an ``http(s)`` server must answer within
    ``tracking.timeout_s``), that the checkpoint folder is writable, the memory of all members'
    parameters against the available memory, and a resume checkpoint (readable, same config).
    """
    first = cfgs[0]
    _check_accelerator(first)
    if first.tracking.enabled:
        uri = checks.check_uri(first.tracking.uri, float(first.tracking.timeout_s))
        if uri.startswith(("http://", "https://")):  # MLflow's own requests: bounded too (default 120 s x 7 retries)
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, math.ceil(first.tracking.timeout_s))))
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(first.tracking.retries))
    _check_checkpoint_dir(first)
    _check_memory(cfgs)
    if first.trainer.ckpt_path:
        _check_resume(first)


def _check_resume(cfg: DictConfig) -> None:
    from .config.hashing import config_hash, result_config
    from .core.checkpoint import CheckpointError, check_resume

    try:
        check_resume(cfg.trainer.ckpt_path, result_config(cfg), config_hash(cfg), bool(cfg.trainer.force_resume))
    except CheckpointError as exc:
        raise ConfigError(f"Invalid value for 'trainer.ckpt_path': {exc}") from None
