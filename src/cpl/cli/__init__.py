"""The ``cpl`` command (:func:`main`) and its subcommands; ``scripts/*.py`` call the same functions.

Importing this package loads nothing else (``cpl --help``); a command loads the config layer
(OmegaConf) to parse its arguments and torch, Lightning, MLflow or matplotlib only once they are
valid, so ``--help`` and every config error answer at once (``tests/test_cli.py`` counts the modules).
"""

from __future__ import annotations

import signal
import sys
from typing import Sequence

from .args import load_args, parse_args, split_flags
from .bench import bench_main
from .main import COMMANDS, main

__all__ = ["main", "COMMANDS", "train_main", "sweep_main", "bench_main", "parse_args", "split_flags"]

TRAIN_HELP = """\
usage: cpl train conf=NAME [key=value ...] [--cfg | --plan | --force]
       (or: python scripts/train.py conf=NAME [key=value ...])

Train one run of the conf NAME (conf/NAME.yaml), tracked in MLflow. The run is named after the
conf and its overrides (e.g. "matcomp_rank10to5 depth=4 lr=0.1"); each override is also a tag.

  --cfg    print the resolved config and exit (nothing runs, nothing is recorded)
  --plan   print the run's schedule (switches, deficit windows, log points) and an estimate of
           its memory and time on this machine from a short calibration, then exit
  --force  resume from trainer.ckpt_path even if the checkpoint was written with another config

Every further key=value is an OmegaConf dotlist override of the conf, for example
  cpl train conf=matcomp_rank10to5 model.depth=4 task.n_obs=3000 switch.at_step=40000
Lists use brackets (key=[1,2]); null unsets an optional value (train.max_steps=null).
Keys are checked against a typed schema: a misspelt key, a wrong type or an impossible value
stops the run before it starts, naming the key and what is allowed. A conf with a `sweep:`
section is a sweep: run it with `cpl sweep`.

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

Open the runs with:  cpl ui    (MLflow's UI on the store, in its model-training view)
"""


def load_run_config(name: str, overrides: Sequence[str] = ()):
    """The config of one run of ``conf=name``, named after its overrides (``tracking.run_name`` wins).

    Raises:
        ConfigError: as :func:`cpl.config.load_config`; also for a sweep conf (it says to use ``cpl sweep``).
    """
    from ..config import ConfigError, load_config, read_conf
    from ..config.naming import run_name

    raw, _ = read_conf(name)
    if "sweep" in raw or any(o.split("=", 1)[0].strip().split(".")[0] == "sweep" for o in overrides):
        raise ConfigError(
            f"conf={name} is a sweep (it has a `sweep:` section): run it with `cpl sweep conf={name} ...`; "
            "`cpl train` trains one run"
        )
    cfg = load_config(name, list(overrides))
    if cfg.tracking.run_name is None:
        cfg.tracking.run_name = run_name(cfg.name or name, overrides)
    return cfg


def train_main(argv: Sequence[str]) -> int:
    argv = [a for a in argv if a != "--force"] + (["trainer.force_resume=true"] if "--force" in argv else [])
    loaded, code = load_args(argv, TRAIN_HELP, load_run_config)
    if code is not None:
        return code
    cfg, overrides, flags = loaded
    if flags:
        from .dryrun import dry_run

        return dry_run(cfg, flags)

    from ..config import ConfigError
    from ..config.naming import override_tags
    from ..core.module import DivergenceError
    from ..guard import exit_code
    from ..run import train
    from ..tracking.spill import StoreUnreachable

    overrides = [o for o in overrides if o != "trainer.force_resume=true"]
    try:
        result = train(cfg, tags=override_tags(overrides))
    except ConfigError as exc:  # a check before the run is created, or building the run, before any work
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (DivergenceError, StoreUnreachable) as exc:
        print(f"\nerror: {exc}\nThe run is marked FAILED in MLflow, with its metrics so far.", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        detail = getattr(exc, "message", "") or "interrupted"
        print(
            f"\nInterrupted: the run is marked KILLED in MLflow, with its metrics so far ({detail}).",
            file=sys.stderr,
        )
        return exit_code(exc)
    except OSError as exc:  # e.g. a full disk while writing figures: the run is marked FAILED, metrics kept
        print(f"\nerror: {exc}\nThe run is marked FAILED in MLflow, with its metrics so far.", file=sys.stderr)
        return 1
    m = result.metrics
    print(f"\nFinished {cfg.tracking.run_name!r}.")
    for key, label in (
        ("train/loss", "final training loss"),
        ("test/final_error", "final test error (all entries)"),
        ("test/final_error_unobserved", "final test error (unobserved entries)"),
        ("sv/effective_rank", "effective rank of W"),
        ("sv/numerical_rank", "numerical rank of W (s > 1e-2 s_1)"),
    ):
        if key in m:
            print(f"  {label:40s} {m[key]:.6g}")
    if result.report:
        print(result.report)
    if result.run_id:
        from .ui import print_run_links

        print_run_links(result.tracking_uri, [result.run_id])
    return 0


SWEEP_HELP = """\
usage: cpl sweep conf=NAME [key=value ...] [--cfg | --plan]
       (or: python scripts/sweep.py conf=NAME [key=value ...])

Run (or resume) the sweep of the conf NAME (conf/NAME.yaml): the cartesian product of its
`sweep.grid` over the base conf, one MLflow parent run with a nested child run per cell (named by
its grid values, e.g. "depth=2 at_step=1000"), and a summary on the parent (critical-period table
as CSV, figures of the relative error against the deficit onset, critical-period length per group).

  --cfg    print the resolved base config and the sweep settings, and exit
  --plan   print the cells, the groups that train as the members of one run, the total gradient
           steps, an estimate of the memory and of the time on this machine (short calibration)

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
  cpl sweep conf=matcomp_depth_sweep_quick
  cpl sweep conf=matcomp_depth_sweep --plan
  cpl sweep conf=matcomp_rank10to5 'sweep.grid.model.depth=[1,2,3]' 'sweep.grid.switch.at_step=[0,1000,5000]'
  cpl sweep conf=matcomp_depth_sweep sweep.executor=ray sweep.ray_address=auto tracking.uri=http://HOST:5000

Every cell is validated before any runs. Running the same command again resumes the sweep: cells
whose run FINISHED are read back, failed and missing ones run. A failing cell does not stop the
sweep; Ctrl-C does (finished cells stay recorded, the parent is marked KILLED).

Available confs (in {conf_dir}):
{confs}

Open the runs with:  cpl ui    (then compare the children of a sweep: see the README)
"""


def _load_sweep(name: str, overrides: Sequence[str]):
    from ..config.naming import run_name
    from ..sweep.spec import load_sweep

    sweep = load_sweep(name, overrides)
    if sweep.base.tracking.run_name is None:  # the parent run; the children are named by their grid values
        sweep.base.tracking.run_name = run_name(sweep.name, overrides)
    return sweep


def sweep_main(argv: Sequence[str]) -> int:
    loaded, code = load_args(argv, SWEEP_HELP, _load_sweep)
    if code is not None:
        return code
    sweep, overrides, flags = loaded
    if flags:
        from .dryrun import dry_run_sweep

        return dry_run_sweep(sweep, flags)

    from ..config import ConfigError
    from ..sweep.executors import start_pool_server

    start_pool_server(sweep.settings, len(sweep.cells))  # its imports run beside ours
    from ..sweep.runner import run_sweep, warn_remote_store

    warn_remote_store(sweep)
    print(
        f"Sweep {sweep.name!r}: {len(sweep.cells)} cells over "
        f"{', '.join(f'{k} ({len(v)})' for k, v in sweep.grid.items())}, "
        f"executor {sweep.settings.executor}, tracking {sweep.base.tracking.uri}",
        file=sys.stderr,
    )
    from ..guard import exit_code

    try:
        result = run_sweep(sweep)
    except ConfigError as exc:  # a check before the first cell's run is created
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        code = exit_code(exc)
        print(
            f"\nInterrupted: finished cells are recorded, the parent run and unfinished cells are marked KILLED "
            f"(by {signal.Signals(code - 128).name}); run the same command again to resume.",
            file=sys.stderr,
        )
        return code
    print(result.markdown())
    crit = {k: v for k, v in result.summary.items() if k.startswith("critical_period/")}
    if crit:
        print(f"\nCritical-period length (first onset with relative error > {sweep.settings.threshold}; nan = none):")
        for key, value in crit.items():
            print(f"  {key[len('critical_period/') :]:40s} {value:g}")
    from .ui import print_run_links

    print()
    kids = [r["run_id"] for r in result.rows if r["run_id"]]
    heading = "Sweep parent run" + (" (resumed)" if result.resumed_parent else "")
    print_run_links(result.tracking_uri, [result.parent_run_id], kids, heading=heading)
    if result.failed:
        print(
            f"error: {len(result.failed)} cell(s) FAILED: "
            + "; ".join(f"cell {r['cell']}: {r['error']}" for r in result.failed),
            file=sys.stderr,
        )
        return 1
    return 0
