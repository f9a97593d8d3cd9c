"""The runtime faults (at least 30): signals at points of a run, full disks, a failing or hanging
store, tracking servers that refuse, hang or answer 500, corrupt and changed checkpoints, and
concurrent workers. Each is a :class:`~faults.harness.Fault`; see :mod:`faults.harness` for the checks.
"""

from __future__ import annotations

import http.server
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from cpl.config import ConfigError
from cpl.tracking.checks import check_uri

from .harness import SIGNALS, SWEEP, TINY, Fault, Outcome, Store, inspect, interrupt_when_running, workers_alive


def _killed_run_checkpoint(store: Store) -> Path:
    (run,) = [r for r in store.runs() if r.info.status == "KILLED"]
    return store.ckpt / run.info.run_id / "last.ckpt"


def _resume(extra: list[str], code: int, statuses: list[str], says: str = "", prepare=None):
    """A second run resuming the first (KILLED) run's ``last.ckpt``, with ``extra`` arguments."""

    def then(store: Store, out: Outcome) -> None:
        ckpt = _killed_run_checkpoint(store)
        if prepare is not None:
            prepare(ckpt)
        got, err = store.run(store.args([*TINY, f"trainer.ckpt_path={ckpt}", *extra]))
        inspect(store, out, got, err, code, statuses)
        if says and says not in out.message:
            out.problems.append(f"the message does not say {says!r}: {out.message!r}")

    return then


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garble(path: Path) -> None:
    path.write_bytes(b"this is not a checkpoint" * 10)


def _replay_restores_all(store: Store, out: Outcome) -> None:
    """The spill file names the run; ``cpl replay`` writes its rows back: store == produced, once."""
    (failed,) = [r for r in store.runs() if r.info.status == "FAILED"]
    spill = failed.data.tags.get("cpl.spill_file")
    if not spill or not Path(spill).is_file():
        out.problems.append(f"no spill file named by the FAILED run: {spill!r}")
        return
    for expected in (0, 2):  # the second replay finds the file renamed *.replayed
        code, err = store.run(["replay", spill])
        if code != expected:
            out.problems.append(f"cpl replay exited {code}, expected {expected}: {err.strip()[-300:]!r}")
    stored = store.stored_rows()
    if stored != out.produced:
        out.problems.append(f"after replay {stored} rows in the store != {out.produced} produced")


def _no_nan_checkpoint(store: Store, out: Outcome) -> None:
    from cpl.core.checkpoint import finite

    for ckpt in store.checkpoints():
        if not finite(torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]):
            out.problems.append(f"{ckpt.name} holds non-finite weights")


def _one_checkpoint_per_killed_run(store: Store, out: Outcome) -> None:
    killed = [r.info.run_id for r in store.runs() if r.info.status == "KILLED"]
    names = sorted(str(p.relative_to(store.ckpt)) for p in store.checkpoints())
    if names != sorted(f"{k}/last.ckpt" for k in killed):
        out.problems.append(f"checkpoints {names}, expected one last.ckpt per KILLED run")


class _Server(http.server.BaseHTTPRequestHandler):
    mode = "500"

    def do_GET(self):  # noqa: N802 - http.server's name
        if self.mode == "hang":
            time.sleep(30)
            return
        self.send_response(500)
        self.end_headers()
        self.wfile.write(b"internal error")

    do_POST = do_GET

    def log_message(self, *args):
        pass


def _serve(mode: str) -> tuple[str, http.server.ThreadingHTTPServer]:
    handler = type(f"Server_{mode}", (_Server,), {"mode": mode})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


@dataclass
class ServerFault(Fault):
    """The store is a tiny HTTP server that hangs or answers 500, or a port where nothing listens."""

    mode: str = "500"

    def run(self, root: Path) -> Outcome:
        server = None
        if self.mode == "refuse":
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                uri = f"http://127.0.0.1:{s.getsockname()[1]}"  # closed again: nothing listens
        else:
            uri, server = _serve(self.mode)
        try:
            store, out = Store(root), Outcome(self.name, "runtime fault")
            code, err = store.run([*store.args(self.argv), f"tracking.uri={uri}", "tracking.timeout_s=2"])
            inspect(store, out, code, err, self.code, [])
            t0 = time.perf_counter()  # the check itself, timed here (a loaded machine starts Python slowly)
            try:
                check_uri(uri, 2.0)
            except ConfigError:
                pass
            out.seconds = time.perf_counter() - t0
            if out.seconds > 2 * 2.0 + 1:  # connect, then GET /health: each at most the timeout
                out.problems.append(f"the check took {out.seconds:.1f} s with tracking.timeout_s=2")
            return out
        finally:
            if server is not None:
                server.shutdown()


@dataclass
class InterruptSweep(Fault):
    """A sweep signalled from outside once a child runs: it stops within seconds, its pool's workers
    too, the parent and every unfinished child KILLED."""

    def run(self, root: Path) -> Outcome:
        store, out = Store(root), Outcome(self.name, "runtime fault")
        signum, code = SIGNALS[self.spec["signal"]]
        got, err, seconds = interrupt_when_running(store, self.argv, signum)
        out.seconds = seconds
        inspect(store, out, got, err, code, None)
        parents = [r.info.status for r in store.runs() if r.data.tags.get("cpl.sweep.role") == "parent"]
        if parents != ["KILLED"]:
            out.problems.append(f"parent statuses {parents}, expected ['KILLED']")
        if seconds > 30:
            out.problems.append(f"stopped {seconds:.0f} s after the signal")
        time.sleep(1.0)
        if workers_alive(store):
            out.problems.append(f"workers still alive: {workers_alive(store)}")
        return out


@dataclass
class Concurrent(Fault):
    """Two processes on the same store at once (a fresh store: its creation races too)."""

    def run(self, root: Path) -> Outcome:
        store, out, t0 = Store(root), Outcome(self.name, "runtime fault"), time.perf_counter()
        procs = [store.start(store.args(self.argv)) for _ in range(2)]
        errs = []
        for p in procs:
            try:
                errs.append(p.communicate(timeout=600)[1])
            except subprocess.TimeoutExpired:
                p.kill()
                errs.append(p.communicate()[1])
        codes = [p.returncode for p in procs]
        inspect(store, out, max(codes), "\n".join(errs), self.code, self.statuses)
        out.code = "/".join(map(str, codes))
        kids: dict[str, int] = {}
        for r in store.runs():
            if r.data.tags.get("cpl.sweep.role") == "cell":
                kids[r.data.tags["cpl.sweep.cell_hash"]] = kids.get(r.data.tags["cpl.sweep.cell_hash"], 0) + 1
        if self.argv[0] == SWEEP[0] and (len(kids) != 4 or set(kids.values()) != {1}):
            out.problems.append(f"cells trained {sorted(kids.values())} times, expected 4 cells once each")
        out.seconds = time.perf_counter() - t0
        return out


def _signal_faults() -> list[Fault]:
    out = []
    for name, (_, code) in SIGNALS.items():
        spec = {"signal": name}
        out += [
            Fault(f"{name} while the run is created", TINY, "signal_at_creation", code, ["KILLED"], spec),
            Fault(
                f"{name} in training (step 20)",
                TINY,
                "signal_in_training",
                code,
                ["KILLED"],
                {**spec, "at": 20},
                _one_checkpoint_per_killed_run,
                quick=name == "SIGTERM",
            ),
            Fault(f"{name} while figures are logged", TINY, "signal_in_final_logging", code, ["KILLED"], spec),
            Fault(f"{name} while a checkpoint is written", TINY, "signal_in_checkpoint_write", code, ["KILLED"], spec),
            Fault(
                f"{name} in a sweep's first cell", SWEEP, "signal_in_training", code, ["KILLED"] * 2, {**spec, "at": 5}
            ),
            Fault(f"{name} while a sweep's parent is created", SWEEP, "signal_at_creation", code, ["KILLED"], spec),
            InterruptSweep(
                f"{name} to a process-pool sweep",
                [*SWEEP, "sweep.processes=2", "train.steps_after_switch=3000"],
                spec=spec,
            ),
        ]
    return out


#: long enough (a few thousand steps) to write metrics more than once before the end
LONGER = [*TINY, "train.steps_after_switch=3000"]

FAULTS: list[Fault] = [
    *_signal_faults(),
    Fault("full disk while figures are logged", TINY, "disk_full_in_final_logging", 1, ["FAILED"]),
    Fault("full disk while a checkpoint is written", TINY, "disk_full_in_checkpoint_write", 1, ["FAILED"]),
    Fault(
        "store disk full after the first write",
        LONGER,
        "store_disk_full",
        1,
        ["FAILED"],
        {"at": 1},
        _replay_restores_all,
        quick=True,
    ),
    Fault(
        "store hangs after the first write (timeout 3 s)",
        [*LONGER, "tracking.timeout_s=3"],
        "store_hangs",
        1,
        ["FAILED"],
        {"at": 1},
        _replay_restores_all,
    ),
    Fault("store answers 500 after one write", LONGER, "store_500", 1, ["FAILED"], {"at": 1}, _replay_restores_all),
    Fault("store fails on the first write", TINY, "store_disk_full", 1, ["FAILED"], {"at": 0}, _replay_restores_all),
    ServerFault("tracking server refuses connections", TINY, code=2, mode="refuse"),
    ServerFault("tracking server hangs", TINY, code=2, mode="hang"),
    ServerFault("tracking server answers 500", TINY, code=2, mode="500"),
    ServerFault("sweep on a tracking server that hangs", SWEEP, code=2, mode="hang"),
    Fault(
        "resume with the same config",
        TINY,
        "signal_in_training",
        130,
        ["KILLED"],
        {"at": 20},
        _resume([], 0, ["KILLED", "FINISHED"]),
    ),
    Fault(
        "resume with a changed config is refused",
        TINY,
        "signal_in_training",
        130,
        ["KILLED"],
        {"at": 20},
        _resume(["model.init_scale=0.5"], 2, ["KILLED"], "model.init_scale"),
    ),
    Fault(
        "resume with a changed config and --force",
        TINY,
        "signal_in_training",
        130,
        ["KILLED"],
        {"at": 20},
        _resume(["model.init_scale=0.5", "--force"], 0, ["KILLED", "FINISHED"]),
    ),
    Fault(
        "resume from a truncated checkpoint",
        TINY,
        "signal_in_training",
        130,
        ["KILLED"],
        {"at": 20},
        _resume([], 2, ["KILLED"], "truncated or corrupt", _truncate),
    ),
    Fault(
        "resume from a corrupt checkpoint",
        TINY,
        "signal_in_training",
        130,
        ["KILLED"],
        {"at": 20},
        _resume([], 2, ["KILLED"], "truncated or corrupt", _garble),
    ),
    Fault(
        "divergence: FAILED, no NaN checkpoint",
        [*TINY, "optim.lr=1000"],
        "none",
        1,
        ["FAILED"],
        then=_no_nan_checkpoint,
    ),
    Fault(
        "a sweep with a diverging cell",
        [*SWEEP, "sweep.grid.optim.lr=[0.5,1000]", "sweep.grid.model.depth=[2]"],
        "none",
        1,
        None,
    ),
    Fault("full disk while a sweep cell's figures are logged", SWEEP, "disk_full_in_final_logging", 1, None),
    Concurrent("two sweeps at once on a fresh store", SWEEP, statuses=["FINISHED"] * 5),
    Concurrent("two runs at once on a fresh store", TINY, statuses=["FINISHED"] * 2),
    Fault("a clean run", TINY, "none", 0, ["FINISHED"], then=_one_checkpoint_per_killed_run),
]
