"""Executors: run a sweep's tasks in this process, in a pool of processes, or on Ray."""

from __future__ import annotations

import copy
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Iterator, Optional, Sequence

from omegaconf import OmegaConf

from .spec import Cell, CellResult, SweepConfig

__all__ = [
    "LocalExecutor",
    "RayExecutor",
    "make_executor",
    "failed_results",
    "usable_cores",
    "pool_context",
    "start_pool_server",
    "start_order",
    "portable_callbacks",
    "pooled",
    "task_cost",
    "workers",
]


TaskFn = Callable[[Sequence[Cell]], list]


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; ``os.cpu_count()`` where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def failed_results(task: Sequence[Cell], exc: BaseException) -> list[CellResult]:
    return [CellResult(c.index, c.config_hash, "FAILED", error=f"{type(exc).__name__}: {exc}") for c in task]


def task_cost(task: Sequence[Cell], batched: bool = True) -> float:
    """A task's expected time, up to a constant: its member-steps times the depth (the matrix products
    of a step grow with it). On a pool tasks start longest first, so that the last one to start is a
    short one (the depth sweep's three groups on two cores: the makespan of the longest group, not of
    the two shortest run one after the other); in one process they run in the grid's order."""
    from .progress import task_steps  # torch: not needed to start a pool's server

    depth = max(int(OmegaConf.select(c.config, "model.depth", default=1) or 1) for c in task)
    return task_steps(task, batched) * depth


def workers(executor: Any) -> int:
    """How many tasks run at once: a pool's processes (1 in-process); Ray, which has no ``processes``,
    counts as 1 (its cluster's size is not known here)."""
    return int(getattr(executor, "processes", None) or 1)


def pooled(executor: Any) -> bool:
    """Whether tasks run outside this process: a pool of several processes, or Ray (no ``processes``)."""
    return getattr(executor, "processes", 2) > 1


def portable_callbacks(callbacks: Sequence[Any], executor: Any) -> tuple:
    """The callbacks as a task carries them: as they are in this process; for a pool or Ray, shallow
    copies without the module's ``log``/``log_dict`` that Lightning binds onto every callback of a fit
    (a callback that already served an in-process run would otherwise pickle that whole module, and
    its tensors' views fail to pickle: every cell of the sweep FAILED)."""
    if not pooled(executor):
        return tuple(callbacks)
    out = []
    for cb in callbacks:
        bound = [k for k in ("log", "log_dict") if k in getattr(cb, "__dict__", {})]
        if bound:
            cb = copy.copy(cb)
            for k in bound:
                delattr(cb, k)
        out.append(cb)
    return tuple(out)


def start_order(tasks: list[list[Cell]], executor: Any, batched: bool) -> list[list[Cell]]:
    """On a pool or Ray, the tasks longest first (:func:`task_cost`), so that the workers end together;
    in one process, the grid's order."""
    if not pooled(executor):
        return tasks
    return sorted(tasks, key=lambda t: -task_cost(t, batched))


class LocalExecutor:
    """Run tasks in this process (``processes=1``) or in a pool of processes (:func:`pool_context`).

    Args:
        processes: 1 = in-process, n > 1 = a pool of n processes, 0 = one per core this process may
            use (:func:`usable_cores`); never more processes than tasks.
    """

    def __init__(self, processes: int = 1):
        if processes < 0:
            raise ValueError(f"Expected `processes` >= 0, got {processes}")
        self.processes = processes or usable_cores()

    def map(self, fn: TaskFn, tasks: Sequence[list[Cell]]) -> Iterator[tuple[list[Cell], list[CellResult]]]:
        """Yield ``(task, results)`` as tasks finish."""
        if self.processes <= 1 or len(tasks) <= 1:
            for task in tasks:
                yield task, fn(task)
            return
        ctx = pool_context()
        pool = ProcessPoolExecutor(
            max_workers=min(self.processes, len(tasks)),
            mp_context=ctx,
            initializer=_worker_start,
            initargs=(dict(os.environ), ctx.get_start_method() == "forkserver"),
        )
        try:
            futures = {pool.submit(_in_worker, fn, task): task for task in tasks}
            for future in as_completed(futures):
                task = futures[future]
                try:
                    results = future.result()
                except KeyboardInterrupt:
                    raise
                except (Exception, SystemExit) as exc:  # noqa: BLE001 - a worker died or was stopped
                    results = failed_results(task, exc)
                yield task, results
        except BaseException:
            _stop_workers(pool)
            raise
        pool.shutdown(wait=True)


#: set in a pool worker once the sweep told it to stop (SIGTERM): it starts no further task
_STOPPING: dict[str, Optional[int]] = {"signum": None}


#: what a pool's server imports once, so that its workers start with it (cpl.sweep.runner: torch,
#: Lightning, MLflow and cpl's run code, about 7 s of imports on a 2-core machine)
PRELOAD = ["cpl.sweep.runner"]


def pool_context():
    """The pool's start method: ``forkserver`` where the platform has it, with :data:`PRELOAD`
    imported once in the server (a worker is forked from it, ready at once; under ``spawn`` each worker
    imported everything again, the first cells of a sweep started ~7 s late); ``spawn`` elsewhere.
    Workers never fork the sweep's own process (its MLflow connections and threads)."""
    import multiprocessing as mp

    if "forkserver" not in mp.get_all_start_methods():  # pragma: no cover - Windows
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def start_pool_server(settings: SweepConfig, n_tasks: int) -> None:
    """Start the pool's server now, when a sweep will use a process pool: it imports :data:`PRELOAD`
    beside the caller's own start-up (imports, the store, the parent run) instead of after it."""
    if settings.executor != "local" or n_tasks <= 1 or (settings.processes or usable_cores()) <= 1:
        return
    if pool_context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _worker_start(environ: Optional[dict] = None, run_exit_handlers: bool = False) -> None:
    """A worker leaves Ctrl-C to the sweep, which stops it with SIGTERM. Inside a run the run's guard
    turns SIGTERM into KILLED; outside one (idle, or between cells) :func:`_worker_stop` ends the
    worker quietly.

    ``environ``: the sweep's environment when the pool started (a forkserver's workers would
    otherwise inherit the server's, from when it started). ``run_exit_handlers``: a forkserver's
    worker ends with ``os._exit``, so the exit handlers (``atexit``) run from multiprocessing's own
    exit hook instead, as they would in a spawned worker.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_stop)
    if environ is not None:
        os.environ.clear()
        os.environ.update(environ)
    if run_exit_handlers:
        import atexit
        from multiprocessing import util

        util.Finalize(None, atexit._run_exitfuncs, exitpriority=-100)


def _worker_stop(signum, frame) -> None:
    """SIGTERM outside a run: no further task starts, and ``SystemExit`` ends the worker without a
    traceback, its exit handlers run (nothing buffered is dropped)."""
    _STOPPING["signum"] = signum
    raise SystemExit(128 + signum)


def _in_worker(fn: TaskFn, task: Sequence[Cell]) -> list:
    """A task as a worker runs it: refused once the sweep stopped this worker, so a task already
    queued to it (the pool queues one ahead) is not started after the signal."""
    if _STOPPING["signum"] is not None:
        raise SystemExit(128 + _STOPPING["signum"])
    try:
        return fn(task)
    except KeyboardInterrupt as exc:  # a run's guard turned the sweep's SIGTERM into KILLED
        _STOPPING["signum"] = int(getattr(exc, "signum", 15))
        raise


def _stop_workers(pool: ProcessPoolExecutor, grace_s: float = 10.0) -> None:
    """SIGTERM to every worker (a run in progress is marked KILLED by its guard); the ones still
    alive after ``grace_s`` are killed (the sweep then marks their runs KILLED)."""
    import signal
    import time

    procs = list((getattr(pool, "_processes", None) or {}).values())  # the pool's own handles
    pool.shutdown(wait=False, cancel_futures=True)  # queued tasks first, so fewer reach a worker
    for p in procs:
        if p.is_alive():
            os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()


def _ray_call(fn: TaskFn, task: list[Cell]) -> list[CellResult]:
    return fn(task)


class RayExecutor:
    """Run tasks as Ray tasks, on a cluster (``address``) or on a local Ray instance it starts.

    Every cell logs to the config's ``tracking.uri``; on a cluster that must be a tracking server
    all nodes reach (``http://host:port``), and ``cpl`` must be installed on the nodes.

    Args:
        address: the cluster's address (``ray://...``, ``auto``, ``host:port``); None = a local instance
            (an already initialised Ray is used as it is).
        num_cpus: CPUs of a local instance (None = all).
        cpus_per_task: CPUs Ray reserves per task.
    """

    def __init__(self, address: Optional[str] = None, num_cpus: Optional[int] = None, cpus_per_task: float = 1.0):
        if cpus_per_task <= 0:
            raise ValueError(f"Expected `cpus_per_task` > 0, got {cpus_per_task}")
        self.address, self.num_cpus, self.cpus_per_task = address, num_cpus, cpus_per_task

    def map(self, fn: TaskFn, tasks: Sequence[list[Cell]]) -> Iterator[tuple[list[Cell], list[CellResult]]]:
        import ray

        started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False}
            if self.address is None:  # a local instance: its workers see this process's PYTHONPATH
                kwargs["num_cpus"] = self.num_cpus
                env = {k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}
                kwargs["runtime_env"] = {"env_vars": env} if env else None
            ray.init(address=self.address, **kwargs)
            started = True
        remote = ray.remote(num_cpus=self.cpus_per_task, max_retries=0)(_ray_call)
        pending: list = []
        try:
            refs = {remote.remote(fn, task): task for task in tasks}
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        results = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - a worker died or the task raised
                        results = failed_results(refs[ref], exc)
                    yield refs[ref], results
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        finally:
            if started:
                ray.shutdown()


def make_executor(settings: SweepConfig):
    if settings.executor == "ray":
        return RayExecutor(settings.ray_address, settings.ray_num_cpus, settings.ray_cpus_per_task)
    return LocalExecutor(settings.processes)
