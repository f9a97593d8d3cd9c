"""``--cfg`` and ``--plan`` of ``cpl train`` and ``cpl sweep``: print, never train, never record.

``--cfg`` needs the config layer only. ``--plan`` builds the modules (not trained) to read their
schedules and sizes, and times a few hundred untracked steps to estimate the time on this machine.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from omegaconf import OmegaConf

from .runs import format_table

__all__ = ["dry_run", "dry_run_sweep", "human_seconds", "human_bytes"]

NOTHING = "Dry run: nothing was trained and nothing was recorded."
#: most members of a calibration fit
CALIBRATION_MEMBERS = 8


def human_seconds(s: float) -> str:
    """A duration for people.

    >>> human_seconds(42.0), human_seconds(600.0), human_seconds(9000.0)
    ('42 s', '10.0 min', '2.5 h')
    """
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def human_bytes(n: float) -> str:
    """A size for people.

    >>> human_bytes(512), human_bytes(3 * 2**20)
    ('512 B', '3.0 MiB')
    """
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _steps(n: int) -> str:
    return f"{n:,}".replace(",", " ")


def dry_run(cfg, flags: set[str]) -> int:
    """``--cfg``: the resolved config; ``--plan``: the run's schedule, log points, memory and time."""
    if "--cfg" in flags:
        print(OmegaConf.to_yaml(cfg, resolve=True), end="")
        return 0
    from .. import plan

    exp, events = plan.run_schedule(cfg)
    last = exp.max_steps
    print(f"Plan of run {cfg.tracking.run_name or cfg.name!r} (kind {cfg.kind}): {_steps(last)} gradient steps")
    print("\nSchedule:")
    rows: list[list[Any]] = [[0, "start"]]
    for ev in events:
        what = f"{ev.kind}" + (f" {ev.target}" if ev.target else "")
        what += "".join(f" {k}={v}" for k, v in ev.info.items())
        rows.append([ev.start, what + (f" (until step {ev.end})" if ev.end is not None else "")])
        if ev.end is not None and ev.end < last:
            rows.append([ev.end, f"end of {ev.kind}" + (f" {ev.target}" if ev.target else "")])
    rows.append([last, "end"])
    print(format_table(["step", "event"], sorted(rows, key=lambda r: r[0])))
    print("\nLog points (step 0, every n steps, the last step):")
    print(format_table(["every", "points", "what"], _log_rows(cfg, exp, last)))
    groups = plan.group_plans([cfg])
    plan.measure_memory([cfg], groups)
    groups[0].key = "this run"
    _print_cost(groups, {"this run": plan.calibrate(cfg)}, processes=1)
    print(NOTHING)
    return 0


def _log_rows(cfg, exp, last: int) -> list[list[Any]]:
    names = sorted(exp.module.compute_metrics())
    keys = ", ".join(names[:5]) + (f", ... ({len(names)} keys)" if len(names) > 5 else "")
    rows = [[exp.module.log_every_n_steps, plan_points(exp.module.log_every_n_steps, last), f"metrics: {keys}"]]
    for cb in exp.callbacks:
        every = getattr(cb, "every_n_steps", None)
        if isinstance(every, int):
            name = f"{type(cb).__name__} {getattr(cb, 'prefix', '')}/*".strip()
            sent = getattr(cb, "log_every_n_steps", every)
            note = f" (to MLflow every {sent}: {plan_points(sent, last)} points)" if sent != every else ""
            rows.append([every, plan_points(every, last), name + note])
    ckpt = cfg.trainer.checkpoint_every_n_steps
    if ckpt:
        rows.append([ckpt, last // ckpt, "checkpoints"])
    return rows


def plan_points(every: int, last: int) -> int:
    from ..plan import log_points

    return log_points(every, last)


def _print_cost(groups, calibrations, processes: int) -> None:
    from ..plan import estimate_seconds

    tensors = max(g.tensor_bytes for g in groups)
    history = max(g.history_bytes for g in groups)
    print(
        f"\nMemory: {human_bytes(tensors)} of module tensors (parameters and data, measured on the built module) "
        f"+ {human_bytes(history)} of readouts kept for figures, in the largest run"
        + (f"; up to {processes} runs at once" if processes > 1 else "")
        + f"; plus the Python process (this one, with torch and Lightning loaded: {human_bytes(_rss())} peak)"
    )
    seconds = estimate_seconds(groups, calibrations)
    print(f"Time on this machine: ~{human_seconds(seconds)}, without MLflow writes and figures; calibrated by")
    for label, c in calibrations.items():
        print(
            f"  {label}: fits of {c.steps[0]} and {c.steps[1]} steps"
            + (f", 1 and {c.members} members: " if c.members > 1 else ": ")
            + f"{c.step_seconds * 1e3:.3g} ms/step + {c.member_seconds * 1e3:.3g} ms/member-step "
            f"+ {c.run_seconds:.2g} s/run"
        )
    if processes > 1:
        print(f"  with {processes} processes on free cores: ~{human_seconds(seconds / processes)}")


def _rss() -> int:
    """Peak resident memory of this process in bytes (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def dry_run_sweep(sweep, flags: set[str]) -> int:
    """``--cfg``: the base config and the sweep settings; ``--plan``: cells, groups, steps, memory, time."""
    s = sweep.settings
    if "--cfg" in flags:
        print(OmegaConf.to_yaml(sweep.base, resolve=True), end="")
        print(OmegaConf.to_yaml({"sweep": dataclasses.asdict(s)}), end="")
        return 0
    from .. import plan
    from ..sweep.executors import usable_cores

    cfgs = [c.config for c in sweep.cells]
    axes = ", ".join(f"{k} ({len(v)})" for k, v in sweep.grid.items())
    print(f"Sweep {sweep.name!r}: {len(cfgs)} cells over {axes}; executor {s.executor}, batched={s.batched}")
    print("\nCells:")
    print(
        format_table(
            ["cell", "run name", "steps"],
            [[c.index, c.config.tracking.run_name, plan.max_steps(c.config)] for c in sweep.cells],
        )
    )
    processes = (s.processes or usable_cores()) if s.executor == "local" else 1
    groups = plan.group_plans(cfgs, s.batched, s.max_members, workers=processes)  # as the runner plans them
    plan.measure_memory(cfgs, groups)
    print("\nGroups (cells trained as the members of one run; an onset chain shares its pre-training trunk):")
    rows = [
        [i + 1, _cells(g.cells), len(g.cells), g.chains, g.length, g.member_steps, human_bytes(g.tensor_bytes)]
        for i, g in enumerate(groups)
    ]
    print(format_table(["group", "cells", "members", "chains", "run steps", "member-steps", "tensors"], rows))
    total, alone = sum(g.member_steps for g in groups), sum(g.steps_alone for g in groups)
    print(
        f"\nTotal: {_steps(total)} gradient steps over all members ({_steps(alone)} if every cell ran alone), "
        f"{len(groups)} runs"
    )
    calibrations: dict[str, Any] = {}
    labels: dict[str, str] = {}
    for i, g in enumerate(groups):  # one calibration per kind of group (same depth, size, lr, ...), <= 8 members
        if g.key not in labels:
            labels[g.key] = f"group {i + 1}"
            n = min(len(g.cells), CALIBRATION_MEMBERS)
            calibrations[labels[g.key]] = plan.calibrate(cfgs[g.cells[0]], threads=s.torch_threads, members=n)
        g.key = labels[g.key]
    _print_cost(groups, calibrations, min(processes, len(groups)))
    print(NOTHING)
    return 0


def _cells(cells: list[int]) -> str:
    """Cell indices as ranges.

    >>> _cells([0, 1, 2, 5])
    '0-2, 5'
    """
    parts, start = [], None
    for i, c in enumerate(cells):
        if start is None:
            start = c
        if i + 1 == len(cells) or cells[i + 1] != c + 1:
            parts.append(str(start) if start == c else f"{start}-{c}")
            start = None
    return ", ".join(parts)
