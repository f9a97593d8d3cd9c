"""``cpl bench``: the Lightning + MLflow run against a plain PyTorch loop doing the same work."""

from __future__ import annotations

import sys
from typing import Sequence

__all__ = ["bench_main", "BENCH_HELP"]

BENCH_HELP = """\
usage: cpl bench users [conf=matcomp_depth_sweep] [scale=1] [subset=KEY=[v,...] ...]
       cpl bench [conf=NAME] [repeats=3] [key=value ...]
       cpl bench sweep [scale=0.1] [repeats=1]
       (or: python scripts/bench.py ...)

users (the headline): the paper sweep conf run exactly as users run it, `python scripts/sweep.py
conf=NAME` in a fresh process and an empty folder (MLflow to its default SQLite store there),
against the paper-style plain loop on the same grid (each cell from scratch, test error every
step, top-10 singular values every 10 steps), in one run. Prints the ratio, both wall times, the
store's size in MB, its metric rows, artifacts and checkpoints in MB, and the largest relative
difference of a cell's final test error. scale=0.1 shortens onsets and steps (a quick check);
subset=model.depth=[3] keeps part of the grid.

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
    from ..config import ConfigError, load_config
    from .args import parse_args

    argv = list(argv)
    if any(a in ("-h", "--help", "help") for a in argv):
        parse_args(["--help"], BENCH_HELP)
        return 0
    if argv and argv[0] == "sweep":
        return _bench_sweep_main(argv[1:])
    if argv and argv[0] == "users":
        return _bench_users_main(argv[1:])
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

    from ..bench import bench_train

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

    from ..bench import bench_sweep

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


def _bench_users_main(argv: Sequence[str]) -> int:
    from ..config import ConfigError, available_confs

    conf, scale, subset = "matcomp_depth_sweep", 1.0, []
    for a in argv:
        key, _, value = a.partition("=")
        if key == "conf" and value:
            conf = value
        elif key == "scale" and value:
            try:
                scale = float(value)
            except ValueError:
                scale = -1.0
            if not 0 < scale <= 1:
                print(f"error: Invalid value for 'scale': got {value!r}; allowed: a number in (0, 1]", file=sys.stderr)
                return 2
        elif key == "subset" and "=" in value:
            subset.append(value)
        else:
            print(f"error: unknown argument {a!r}; allowed: conf=NAME scale=FLOAT subset=KEY=[v,...]", file=sys.stderr)
            return 2
    if conf not in available_confs():
        print(f"error: Invalid value for 'conf': got {conf!r}; allowed: one of {available_confs()}", file=sys.stderr)
        return 2
    from ..bench import bench_users

    try:
        out = bench_users(conf, scale, subset)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"users benchmark: {conf} as `python scripts/sweep.py conf={conf} {' '.join(out['overrides'])}`".rstrip())
    print(f"cells: {out['cells']} ({out['finished_cells']} finished), torch threads per task {out['torch_threads']}")
    print(f"a worker's step products: {out['step_products']}; the plain loop's: torch")
    print(f"cpl sweep (as users run it, MLflow included): {out['users_seconds']:9.1f} s")
    print(f"paper-style plain loop, same grid:            {out['plain_seconds']:9.1f} s")
    print(f"speedup: {out['speedup']:.2f}x  (target >= 5x)")
    print(
        f"store: {out['store_mb']:.1f} MB, {out['metric_rows']} metric rows; artifacts {out['artifacts_mb']:.1f} MB; "
        f"checkpoints {out['checkpoints_mb']:.1f} MB"
    )
    print(f"largest relative difference of a cell's final test error (cpl vs plain): {out['max_rel_final_diff']:.2e}")
    return 0
