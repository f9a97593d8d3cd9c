"""The fault-injection suite's machinery: run a case, read the store back, check it, print the table.

Bad configs run in-process (parsing, validation and the checks before a run; nothing trains). A
runtime fault runs ``driver.py`` in a subprocess against a fresh SQLite store in a temporary
folder, then checks the exit code, the final status of every run, that none is RUNNING, that the
metric rows in the store plus the spill files equal the rows the processes produced (counted by
``site/sitecustomize.py``), and that the message is one line without a traceback.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

#: a tiny matrix-completion run: ~60 steps, every 10 a checkpoint, figures at the end
TINY = [
    "train",
    "conf=matcomp_rank10to5",
    "task.size=12",
    "task.pretrain_rank=3",
    "task.final_rank=2",
    "task.n_obs=80",
    "model.depth=2",
    "switch.at_step=30",
    "train.steps_after_switch=30",
    "log.every_n_steps=5",
    "log.sv_every_n_steps=5",
    "log.sv_top_k=3",
    "trainer.checkpoint_every_n_steps=10",
    "trainer.progress_bar=false",
]
#: a tiny sweep: 4 cells, one run each
SWEEP = [
    "sweep",
    "conf=matcomp_depth_sweep_quick",
    *TINY[2:6],
    *TINY[8:],
    "sweep.grid.model.depth=[1,2]",
    "sweep.grid.switch.at_step=[10,20]",
    "train.steps_after_switch=30",
    "sweep.batched=false",
]


@dataclass
class Outcome:
    """What a case gave and whether each check passed (``problems`` empty = pass)."""

    name: str
    group: str
    code: Any = None
    statuses: list[str] = field(default_factory=list)
    running: int = 0
    produced: Optional[int] = None
    stored: int = 0
    spilled: int = 0
    message: str = ""
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


# ---------------------------------------------------------------- bad configs (in-process)


def _conf_dir(yaml_files: dict[str, str]) -> Path:
    d = Path(tempfile.mkdtemp(prefix="cpl-faults-conf-"))
    shutil.copytree(REPO / "conf" / "base", d / "base")
    for name, text in yaml_files.items():
        (d / f"{name}.yaml").write_text(text)
    return d


def run_bad_config(command: str, argv: Sequence[str], key: str, conf_dir: Optional[Path] = None) -> Outcome:
    """Parse, validate and pre-check ``cpl COMMAND argv`` as the command does; it must stop with exit
    code 2 and one line naming ``key``."""
    from cpl.cli import SWEEP_HELP, TRAIN_HELP, _load_sweep, load_run_config
    from cpl.cli.args import load_args
    from cpl.config import ConfigError
    from cpl.guard import precheck

    out = Outcome(f"{command} {' '.join(argv)}", "bad config")
    err = io.StringIO()
    old = os.environ.get("CPL_CONF_DIR")
    if conf_dir is not None:
        os.environ["CPL_CONF_DIR"] = str(conf_dir)
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            usage, loader = (TRAIN_HELP, load_run_config) if command == "train" else (SWEEP_HELP, _load_sweep)
            loaded, out.code = load_args(list(argv), usage, loader)
            if out.code is None:
                obj = loaded[0]
                try:
                    precheck([obj] if command == "train" else [obj.base])
                    out.code = 0
                except ConfigError as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    out.code = 2
    except Exception:  # noqa: BLE001 - a traceback is what the suite counts
        err.write(traceback.format_exc())
        out.code = "traceback"
    finally:
        if conf_dir is not None:
            os.environ.pop("CPL_CONF_DIR") if old is None else os.environ.__setitem__("CPL_CONF_DIR", old)
    out.seconds = time.perf_counter() - t0
    text = err.getvalue().strip()
    out.message = text
    if out.code != 2:
        out.problems.append(f"exit code {out.code}, expected 2 (accepted or crashed)")
    if "Traceback" in text or len(text.splitlines()) != 1:
        out.problems.append(f"not one line: {text[:300]!r}")
    elif key.lower() not in text.lower():
        out.problems.append(f"the message does not name {key!r}: {text[:300]!r}")
    return out


def bad_config_outcomes() -> list[Outcome]:
    from .bad_configs import CASES, YAML, YAML_FILES

    conf_dir = _conf_dir(YAML_FILES)
    try:
        yaml_ids = {id(c) for c in YAML}
        return [
            run_bad_config(cmd, argv, key, conf_dir if id(c) in yaml_ids else None)
            for c in CASES
            for cmd, argv, key in [c]
        ]
    finally:
        shutil.rmtree(conf_dir, ignore_errors=True)


# ---------------------------------------------------------------- runtime faults (subprocesses)


class Store:
    """A case's temporary folder: its SQLite store, checkpoints, audit file and how to run cpl there."""

    def __init__(self, root: Path):
        self.root = root
        self.uri = f"sqlite:///{root}/mlflow.db"
        self.ckpt = root / "ckpt"
        self.audit = root / "audit.jsonl"

    def args(self, extra: Sequence[str] = ()) -> list[str]:
        return [*extra, f"tracking.uri={self.uri}", "tracking.experiment=faults", f"trainer.checkpoint_dir={self.ckpt}"]

    def start(self, argv: Sequence[str], fault: str = "none", **spec: Any) -> subprocess.Popen:
        env = dict(os.environ, CPL_FAULT_AUDIT=str(self.audit), PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join([str(HERE / "site"), *filter(None, [env.get("PYTHONPATH")])])
        payload = json.dumps({"fault": fault, "argv": list(argv), **spec})
        return subprocess.Popen(
            [sys.executable, str(HERE / "driver.py"), payload],
            cwd=self.root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, argv: Sequence[str], fault: str = "none", timeout: float = 300, **spec: Any) -> tuple[int, str]:
        proc = self.start(argv, fault, **spec)
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            return 124, err
        return proc.returncode, err

    def runs(self) -> list:
        if not (self.root / "mlflow.db").exists():
            return []
        from cpl.tracking import get_client  # under the store's lock: the case's processes may be creating it

        client = get_client(self.uri)
        exp = client.get_experiment_by_name("faults")
        return client.search_runs([exp.experiment_id], max_results=5000) if exp else []

    def stored_rows(self) -> int:
        from cpl.tracking import get_client

        client = get_client(self.uri)
        return sum(len(client.get_metric_history(r.info.run_id, k)) for r in self.runs() for k in r.data.metrics)

    def spill_files(self) -> list[Path]:
        return sorted(self.ckpt.rglob("unsent_metrics.jsonl*")) if self.ckpt.exists() else []

    def spilled_rows(self) -> int:
        from cpl.tracking.spill import read_spill

        return sum(len(rows) for p in self.spill_files() for _, rows in read_spill(p)[1])

    def produced(self) -> Optional[int]:
        if not self.audit.exists():
            return None
        return sum(json.loads(line)["rows"] for line in self.audit.read_text().splitlines())

    def checkpoints(self) -> list[Path]:
        return sorted(self.ckpt.rglob("*.ckpt*")) if self.ckpt.exists() else []


def inspect(store: Store, out: Outcome, code: Any, err: str, expect_code, expect_statuses) -> Outcome:
    """Fill ``out`` from the store and check the suite's invariants and the case's expectations."""
    out.code = code
    runs = store.runs()
    out.statuses = sorted(r.info.status for r in runs)
    out.running = out.statuses.count("RUNNING")
    out.stored, out.spilled, out.produced = store.stored_rows(), store.spilled_rows(), store.produced()
    lines = [ln for ln in err.splitlines() if ln.startswith(("error:", "Interrupted:"))]
    out.message = lines[-1] if lines else ""
    codes = expect_code if isinstance(expect_code, tuple) else (expect_code,)
    if code not in codes:
        out.problems.append(f"exit code {code}, expected {expect_code}: {err.strip()[-400:]!r}")
    if expect_statuses is not None and out.statuses != sorted(expect_statuses):
        out.problems.append(f"statuses {out.statuses}, expected {sorted(expect_statuses)}")
    if out.running:
        out.problems.append(f"{out.running} run(s) left RUNNING")
    if out.produced is not None and out.stored + out.spilled != out.produced:
        out.problems.append(f"rows: {out.stored} in store + {out.spilled} spilled != {out.produced} produced")
    if "Traceback" in err:
        at = err.index("Traceback")  # where it starts (and who printed it, just before) tells the most
        out.problems.append(f"a traceback: {err[max(0, at - 200) : at + 1200]!r}")
    if code not in (0, 124) and not lines:
        out.problems.append(f"no one-line message: {err.strip()[-300:]!r}")
    for ckpt in store.checkpoints():
        if ".tmp" in ckpt.name:
            out.problems.append(f"a temporary checkpoint file was left: {ckpt.name}")
    return out


@dataclass
class Fault:
    """A runtime fault: the command, the fault injected, what must come out, and optional extra checks."""

    name: str
    argv: list[str]
    fault: str = "none"
    code: Any = 0
    statuses: Optional[list[str]] = None
    spec: dict = field(default_factory=dict)
    then: Optional[Callable[[Store, Outcome], None]] = None  #: more steps and checks after the first run
    quick: bool = False  #: also in the default pytest run

    def run(self, root: Path) -> Outcome:
        store = Store(root)
        out = Outcome(self.name, "runtime fault")
        t0 = time.perf_counter()
        code, err = store.run(store.args(self.argv), self.fault, **self.spec)
        inspect(store, out, code, err, self.code, self.statuses)
        if self.then is not None and not out.problems:
            try:
                self.then(store, out)
            except Exception as exc:  # noqa: BLE001 - reported as the case's problem
                out.problems.append(f"{type(exc).__name__}: {exc}")
        out.seconds = time.perf_counter() - t0
        return out


def interrupt_when_running(
    store: Store, argv: Sequence[str], signum: int, min_children: int = 1
) -> tuple[int, str, float]:
    """Start a sweep, send ``signum`` to it once a child run is RUNNING; ``(code, stderr, seconds to exit)``."""
    proc = store.start(store.args(argv))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            kids = [r for r in store.runs() if r.info.status == "RUNNING" and "mlflow.parentRunId" in r.data.tags]
        except Exception:  # noqa: BLE001 - the store is being created
            kids = []
        if len(kids) >= min_children:
            break
        time.sleep(0.5)
    t0 = time.monotonic()
    proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        return 124, err, time.monotonic() - t0
    return proc.returncode, err, time.monotonic() - t0


def workers_alive(store: Store) -> list[int]:
    """Processes still carrying this case's audit path in their environment (its pool's workers)."""
    mark = f"CPL_FAULT_AUDIT={store.audit}".encode()
    alive = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            if mark in (d / "environ").read_bytes().split(b"\0"):
                alive.append(int(d.name))
        except OSError:
            continue
    return alive


def run_outcomes(faults: Sequence[Fault], parallel: int = 2, report: Optional[Callable] = None) -> list[Outcome]:
    """Run runtime faults, ``parallel`` at a time, each in its own temporary folder; ``report(outcome)``
    as each one ends."""
    from concurrent.futures import ThreadPoolExecutor

    def one(fault: Fault) -> Outcome:
        root = Path(tempfile.mkdtemp(prefix="cpl-fault-"))
        try:
            out = fault.run(root)
        except Exception as exc:  # noqa: BLE001 - the harness itself failed: report it
            out = Outcome(fault.name, "runtime fault", problems=[f"harness: {type(exc).__name__}: {exc}"])
        finally:
            shutil.rmtree(root, ignore_errors=True)
        if report is not None:
            report(out)
        return out

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return list(pool.map(one, faults))


HEAD = f"{'case':60s} {'code':>7s} {'statuses':24s} {'rows prod/store/spill':>22s} {'s':>6s}  result"


def row(o: Outcome) -> str:
    """One line of the table (statuses by their first two letters: FI, FA, KI, RU)."""
    st = ",".join(s[:2] for s in o.statuses) or "-"
    rows = f"{'?' if o.produced is None else o.produced}/{o.stored}/{o.spilled}" if o.group != "bad config" else "-"
    result = "ok" if o.ok else "FAIL: " + "; ".join(o.problems)[:300]
    return f"{o.name[:60]:60s} {str(o.code):>7s} {st[:24]:24s} {rows:>22s} {o.seconds:6.1f}  {result}"


def table(outcomes: Sequence[Outcome]) -> str:
    """The suite's table: one row per case, then the totals the issue asks for."""
    lines = [HEAD, "-" * len(HEAD), *map(row, outcomes)]
    bad = [o for o in outcomes if o.group == "bad config"]
    rt = [o for o in outcomes if o.group != "bad config"]
    lost = sum(o.produced - o.stored - o.spilled for o in rt if o.produced is not None)
    unknown = sum(o.produced is None for o in rt if o.statuses)
    tracebacks = sum(any("traceback" in p.lower() or "not one line" in p for p in o.problems) for o in outcomes)
    lines += [
        "",
        f"bad configs: {len(bad)} ({sum(o.ok for o in bad)} answered in one line naming the key before any work)",
        f"runtime faults: {len(rt)} ({sum(o.ok for o in rt)} passed)",
        f"runs left RUNNING: {sum(o.running for o in outcomes)}",
        f"rows lost (produced - stored - spilled): {lost}"
        + (f" ({unknown} case(s) without a row count)" if unknown else ""),
        f"tracebacks or multi-line messages: {tracebacks}",
        f"failed cases: {sum(not o.ok for o in outcomes)}",
    ]
    return "\n".join(lines)


SIGNALS = {"SIGINT": (signal.SIGINT, 130), "SIGTERM": (signal.SIGTERM, 143)}
