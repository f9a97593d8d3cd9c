"""Command-line entry points (the scripts in ``scripts/`` call these)."""

from __future__ import annotations

import sys
from typing import Sequence

from .config import ConfigError, available_confs, conf_dir, load_config

TRAIN_HELP = """\
usage: python scripts/train.py conf=NAME [key=value ...]

Train one run of the conf NAME (conf/NAME.yaml), tracked in MLflow.

Every further key=value is an OmegaConf dotlist override of the conf, for example
  python scripts/train.py conf=matcomp_rank10to5 model.depth=4 task.n_obs=3000 switch.at_step=40000
Lists use brackets (key=[1,2]); null unsets an optional value (train.max_steps=null).
Keys are checked against a typed schema: a misspelt key, a wrong type or an impossible value
stops the run before it starts, naming the key and what is allowed.

Common keys (matrix completion):
  seed                    seed of the tasks, the observations and the init
  task.size               N (matrices are N x N)           task.n_obs       observed entries
  task.pretrain_rank      rank of the deficit task         task.final_rank  rank of the final task
  model.depth             number of factors                model.init_scale g (init scale)
  optim.lr                learning rate                    switch.at_step   length of the deficit
  train.steps_after_switch, log.every_n_steps, log.sv_every_n_steps
  ode.enabled=true         log an analytic reference next to SGD (ode/sv_k, sgd/sv_k, overlay figure)
  ode.kind                factorization (any depth) | saxe | braun (depth 2, full observation)
  task.shared_basis=true  both targets share singular vectors     model.init=aligned  init in that basis
  tracking.uri            MLflow store (default $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db)
  trainer.ckpt_path       resume from a checkpoint         trainer.accelerator cpu|gpu|auto

Common keys (two-pathway network, kind: multipath):
  model.depth, model.width, model.init (svd|gaussian), model.init_scale, optim.lr, train.max_steps
  deficit.enabled|pathway|start|end   gating deficit window (pathway's output detached)
  lesion.enabled|pathway|mode|start|end   remove a task mode from a pathway (mode is 0-based)
  ode.enabled|kind (discrete|flow)|every_n_steps   per-mode reference logged next to GD

Available confs (in {conf_dir}):
{confs}

Open the runs with:  mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db
"""


def parse_args(argv: Sequence[str], usage: str) -> tuple[str, list[str]] | None:
    """Split ``conf=NAME`` from the dotlist overrides; None after printing help."""
    argv = list(argv)
    if not argv or any(a in ("-h", "--help", "help") for a in argv):
        print(usage.format(conf_dir=conf_dir(), confs="\n".join(f"  {c}" for c in available_confs()) or "  (none)"))
        return None
    confs = [a for a in argv if a.startswith("conf=")]
    if len(confs) != 1:
        raise ConfigError(
            f"Expected exactly one conf=NAME argument, got {len(confs)}; available confs: "
            f"{', '.join(available_confs())}"
        )
    bad = [a for a in argv if "=" not in a and not a.startswith("~")]  # ~callbacks.NAME removes a callback
    if bad:
        raise ConfigError(f"Arguments must be key=value, got {bad}; see --help")
    return confs[0].split("=", 1)[1], [a for a in argv if not a.startswith("conf=")]


def _load(argv: Sequence[str], usage: str, loader):
    """Parse ``conf=NAME key=value ...`` and load it with ``loader``: (object, None), or (None, exit code)
    after printing help (0) or a config error (2)."""
    try:
        parsed = parse_args(argv, usage)
        if parsed is None:
            return None, 0
        return loader(*parsed), None
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None, 2


def train_main(argv: Sequence[str]) -> int:
    from .core.module import DivergenceError

    cfg, code = _load(argv, TRAIN_HELP, load_config)
    if code is not None:
        return code

    from .run import train

    try:
        result = train(cfg)
    except ConfigError as exc:  # raised while building the run (e.g. a callback's arguments), before any work
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DivergenceError as exc:
        print(f"\nerror: {exc}\nThe run is marked FAILED in MLflow, with its metrics so far.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"\nInterrupted: the run is marked KILLED in MLflow, with its metrics so far. "
            "Resume with trainer.ckpt_path=<checkpoint_dir>/<run id>/interrupted.ckpt (under "
            f"{cfg.trainer.checkpoint_dir}/).",
            file=sys.stderr,
        )
        return 130
    m = result.metrics
    print("\nFinished.")
    for key, label in (
        ("train/loss", "final training loss"),
        ("test/final_error", "final test error (all entries)"),
        ("test/final_error_unobserved", "final test error (unobserved entries)"),
        ("sv/effective_rank", "effective rank of W"),
        ("sv/numerical_rank", "numerical rank of W (s > 1e-2 s_1)"),
    ):
        if key in m:
            print(f"  {label:40s} {m[key]:.6g}")
    if result.run_id:
        print(f"  MLflow run {result.run_id} in {result.tracking_uri}")
        print(f"  open it with:  mlflow ui --backend-store-uri {result.tracking_uri}")
    return 0


SWEEP_HELP = """\
usage: python scripts/sweep.py conf=NAME [key=value ...]

Run (or resume) the sweep of the conf NAME (conf/NAME.yaml): the cartesian product of its
`sweep.grid` over the base conf, one MLflow parent run with a nested child run per cell, and a
summary on the parent (critical-period table as CSV, figures of the relative error against the
deficit onset, critical-period length per group).

Overrides:
  sweep.grid.KEY=[v1,v2,...]  add or replace a grid key, e.g. 'sweep.grid.model.depth=[1,2,3]'
  sweep.group_by=KEY          the key whose values make the curves (default: first grid key)
  sweep.onset_key=KEY         the deficit onset (default switch.at_step; null = no analysis)
  sweep.threshold=X           critical-period length = first onset with relative error > X
  sweep.executor=local|ray    local: sweep.processes=1 in-process, N processes, 0 = one per core
                              ray: sweep.ray_address=ADDRESS (null = start a local Ray instance)
  sweep.name=NAME             the sweep's name (default: the conf name)
  any other key=value         changes the base conf of every cell (see scripts/train.py --help)

Examples:
  python scripts/sweep.py conf=matcomp_depth_sweep_quick
  python scripts/sweep.py conf=matcomp_rank10to5 'sweep.grid.model.depth=[1,2,3]' \
      'sweep.grid.switch.at_step=[0,1000,5000]'
  python scripts/sweep.py conf=matcomp_depth_sweep sweep.executor=ray sweep.ray_address=auto tracking.uri=http://HOST:5000

Every cell is validated before any runs. Running the same command again resumes the sweep: cells
whose run FINISHED are read back, failed and missing ones run. A failing cell does not stop the
sweep; Ctrl-C does (finished cells stay recorded, the parent is marked KILLED).

Available confs (in {conf_dir}):
{confs}

Open the runs with:  mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db
"""


def sweep_main(argv: Sequence[str]) -> int:
    from .sweep import load_sweep, run_sweep, warn_remote_store

    sweep, code = _load(argv, SWEEP_HELP, load_sweep)
    if code is not None:
        return code
    warn_remote_store(sweep)
    print(
        f"Sweep {sweep.name!r}: {len(sweep.cells)} cells over "
        f"{', '.join(f'{k} ({len(v)})' for k, v in sweep.grid.items())}, "
        f"executor {sweep.settings.executor}, tracking {sweep.base.tracking.uri}",
        file=sys.stderr,
    )
    try:
        result = run_sweep(sweep)
    except KeyboardInterrupt:
        print(
            "\nInterrupted: finished cells are recorded and the parent run is marked KILLED; run the same "
            "command again to resume.",
            file=sys.stderr,
        )
        return 130
    print(result.markdown())
    crit = {k: v for k, v in result.summary.items() if k.startswith("critical_period/")}
    if crit:
        print(f"\nCritical-period length (first onset with relative error > {sweep.settings.threshold}; nan = none):")
        for key, value in crit.items():
            print(f"  {key[len('critical_period/') :]:40s} {value:g}")
    print(
        f"\nParent run {result.parent_run_id} in {result.tracking_uri}"
        + (" (resumed)" if result.resumed_parent else "")
    )
    if result.failed:
        print(
            f"{len(result.failed)} cell(s) FAILED: "
            + "; ".join(f"cell {r['cell']}: {r['error']}" for r in result.failed),
            file=sys.stderr,
        )
        return 1
    return 0


BENCH_HELP = """\
usage: python scripts/bench.py [conf=NAME] [repeats=3] [key=value ...]
       python scripts/bench.py sweep [scale=0.1] [repeats=1]

sweep: the paper's onset sweep at depth 3 (9 onsets 0..100000, then 30000 steps; every length
times `scale`) as one batched run sharing the pre-training trunk, with MLflow logging, against a
plain PyTorch loop running the 9 runs one after another as the paper's code does (re-initialised,
test error every step, top-10 singular values every 10 steps). Prints the wall-clock ratio and
the largest per-cell difference in final test error. repeats=N alternates the two N times and
reports the ratio of the medians (use it on a shared machine).

Times, in one process, the Lightning run with MLflow logging (to a temporary SQLite store)
against a plain PyTorch loop doing the same gradient steps, test errors and singular-value
readouts. Defaults: conf=matcomp_rank10to5 switch.at_step=3000 train.steps_after_switch=3000.
Prints steps/s of each and the ratio Lightning / plain (target >= 0.7).

Available confs (in {conf_dir}):
{confs}
"""


def bench_main(argv: Sequence[str]) -> int:
    argv = list(argv)
    if any(a in ("-h", "--help", "help") for a in argv):
        parse_args(["--help"], BENCH_HELP)
        return 0
    if argv and argv[0] == "sweep":
        return _bench_sweep_main(argv[1:])
    repeats = 3
    rest = []
    for a in argv:
        if a.startswith("repeats="):
            repeats = int(a.split("=", 1)[1])
        else:
            rest.append(a)
    if not any(a.startswith("conf=") for a in rest):
        rest.insert(0, "conf=matcomp_rank10to5")
    defaults = ["switch.at_step=3000", "train.steps_after_switch=3000"]
    try:
        name, overrides = parse_args(rest, BENCH_HELP)
        keys = {o.split("=", 1)[0] for o in overrides}
        cfg = load_config(name, [d for d in defaults if d.split("=", 1)[0] not in keys] + overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import torch

    from .bench import bench_train

    print(
        f"benchmark: conf={name}, depth {cfg.model.depth}, N {cfg.task.size}, {repeats} repeats, torch threads "
        f"{torch.get_num_threads()}"
    )
    out = bench_train(cfg, repeats=repeats)
    print(f"{'':20s} {'seconds':>9s} {'steps/s':>9s}")
    for key in ("plain", "lightning", "lightning+mlflow"):
        print(f"{key:20s} {out['seconds'][key]:9.3f} {out['steps_per_s'][key]:9.0f}")
    print(f"ratio Lightning / plain:           {out['ratio_lightning']:.3f}")
    print(f"ratio Lightning+MLflow / plain:    {out['ratio_lightning_mlflow']:.3f}  (target >= 0.7)")
    print(
        f"time waiting on MLflow writes: {out['mlflow_write_seconds']:.3f} s "
        f"({100 * out['mlflow_write_share']:.1f}% of the run)"
    )
    print(f"max |W_lightning - W_plain|: {out['max_abs_weight_diff']:.3e}")
    return 0


def _bench_sweep_main(argv: Sequence[str]) -> int:
    import torch

    from .bench import bench_sweep

    scale, repeats = 0.1, 1
    for a in argv:
        key, _, value = a.partition("=")
        try:
            if key == "scale" and value:
                scale = float(value)
            elif key == "repeats" and value:
                repeats = int(value)
            else:
                print(f"error: unknown argument {a!r}; allowed: scale=FLOAT repeats=INT", file=sys.stderr)
                return 2
        except ValueError:
            print(f"error: Invalid value for {key!r}: got {value!r}; allowed: a number", file=sys.stderr)
            return 2
    if not 0 < scale <= 1:
        print(f"error: Invalid value for 'scale': got {scale}; allowed: a number in (0, 1]", file=sys.stderr)
        return 2
    if repeats < 1:
        print(f"error: Invalid value for 'repeats': got {repeats}; allowed: an integer >= 1", file=sys.stderr)
        return 2
    print(f"sweep benchmark: 9 onsets, depth 3, N 100, lengths x{scale}, torch threads {torch.get_num_threads()}")
    out = bench_sweep(scale, repeats)
    print(f"onsets: {out['onsets']}")
    median = "median of " + str(repeats) + ", alternating" if repeats > 1 else "one run each"
    print(f"plain loop, 9 runs one after another: {out['plain_seconds']:8.2f} s  ({median})")
    print(
        f"cpl, batched with shared trunk+MLflow: {out['framework_seconds']:8.2f} s  (waiting on MLflow: "
        f"{out['mlflow_write_seconds']:.2f} s)"
    )
    print(f"speedup: {out['speedup']:.2f}x  (target >= 3x)")
    if repeats > 1:
        print(
            "each repeat (plain / cpl): "
            + ", ".join(
                f"{p:.1f} s / {o:.1f} s = {p / o:.2f}x" for p, o in zip(out["plain_times"], out["framework_times"])
            )
        )
    print("final test error per cell (plain / cpl):")
    for t, a, b in zip(out["onsets"], out["plain_final"], out["framework_final"]):
        print(f"  onset {t:6d}: {a:.6f} / {b:.6f}")
    print(f"largest per-cell difference in final test error: {out['max_final_diff']:.3e}")
    return 0
