"""``train``: one tracked run of any model family, with one or many members.

A run builds its family's :class:`~cpl.core.experiment.Experiment` (the registry in
:mod:`cpl.config.registry` names the family), opens one MLflow run per member, fits, and records
every member's final metrics, figures and traces. :func:`train` is one config; :func:`train_group`
trains several cells of a sweep as the members of one module (shared trunks, see
:mod:`cpl.batching`), each still recorded as its own run, exactly as a separate run would be.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, OnExceptionCheckpoint
from omegaconf import DictConfig, OmegaConf

from . import tracking
from .batching import batch_key, batchable, plan_members
from .config import family, flatten, validate
from .config.hashing import config_hash, result_config
from .core.checkpoint import SafeCheckpointIO
from .core.experiment import Experiment
from .core.lightning_compat import quiet_lightning
from .core.members import MemberSchedule, member_metrics, member_prefix
from .core.progress import StepProgressBar
from .core.spectrum import effective_rank, numerical_rank
from .figures import log_figure
from .guard import RunGuard, precheck
from .tracking.dense import log_dense, trunk_tags
from .tracking.logger import CurveThinner

__all__ = ["train", "train_group", "build", "TrainResult", "final_summary"]


@dataclass
class TrainResult:
    """What a run returns: the final metrics and where the run is recorded."""

    metrics: dict[str, float]
    status: str
    run_id: Optional[str] = None
    tracking_uri: Optional[str] = None
    checkpoint_dir: Optional[str] = None
    figures: list[str] = field(default_factory=list)
    logging_seconds: float = 0.0  #: time spent writing metrics to the tracking store
    report: str = ""  #: the family's end-of-run summary for the terminal (e.g. who won each mode)


def build(cfgs: DictConfig | Sequence[DictConfig], schedule: Optional[MemberSchedule] = None) -> Experiment:
    """The :class:`Experiment` of a config (or of cells as members, with their ``schedule``), by its family."""
    cfgs = [cfgs] if isinstance(cfgs, DictConfig) else list(cfgs)
    return family(cfgs[0].kind).experiment.build(cfgs, schedule)


class _InterruptCheckpoint(OnExceptionCheckpoint):
    """Saves ``last.ckpt`` on an exception and remembers the exception (Lightning turns
    Ctrl-C into ``SystemExit``; this tells the two apart). One callback fewer on the hot path."""

    def __init__(self, dirpath):
        super().__init__(dirpath=dirpath, filename="last")
        self.exception: Optional[BaseException] = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.exception = exception
        super().on_exception(trainer, pl_module, exception)


def final_summary(module) -> dict[str, float]:
    """Final metrics of every member plus the effective and numerical rank of its matrix."""
    out = dict(module.last_metrics)
    if hasattr(module, "end_to_end"):
        s = torch.linalg.svdvals(module.end_to_end().double())
        out.update(
            member_metrics({"sv/effective_rank": effective_rank(s), "sv/numerical_rank": numerical_rank(s, 1e-2)})
        )
    return out


def _open_run(client, cfg: DictConfig, tags: dict[str, Any], parent_run_id: Optional[str], guard: RunGuard) -> str:
    """Create the MLflow run of one config: tags, flattened params and the resolved config as YAML."""
    with guard.critical():  # a signal waits until the guard knows the run
        run_id = tracking.start_run(
            client, cfg.tracking.experiment, cfg.tracking.run_name or cfg.name or None, tags, parent_run_id
        )
        guard.add(client, run_id)
    # the run name is the run's name, not a parameter (it would differ between every pair of runs compared)
    tracking.log_params(client, run_id, {k: v for k, v in flatten(cfg).items() if k != "tracking.run_name"})
    client.log_text(run_id, OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
    return run_id


def _open_runs(
    cfgs: Sequence[DictConfig],
    tags: Optional[dict[str, Any]],
    member_tags: Optional[Sequence[dict[str, Any]]],
    parent_run_id: Optional[str],
    guard: RunGuard,
):
    """``(client, uri, run ids)`` of one MLflow run per member (``(None, None, [])`` untracked)."""
    first, n = cfgs[0], len(cfgs)
    if not first.tracking.enabled:
        return None, None, []
    uri = tracking.tracking_uri(first.tracking.uri)
    client = tracking.get_client(uri)
    run_ids = []
    for e, cfg in enumerate(cfgs):
        run_tags = {"cpl.conf": cfg.name, "cpl.kind": cfg.kind}
        if n > 1:
            run_tags.update({"cpl.batched_members": n, "cpl.member": e})
        if cfg.trainer.ckpt_path:
            run_tags["cpl.resumed_from"] = cfg.trainer.ckpt_path
        run_tags.update({**(tags or {}), **(member_tags[e] if member_tags else {})})
        run_ids.append(_open_run(client, cfg, run_tags, parent_run_id, guard))
    if n > 1:
        for run_id in run_ids:
            tracking.set_tags(client, run_id, {"cpl.batch_run_ids": ",".join(run_ids)[:5000]})
    return client, uri, run_ids


def _checkpoint_dir(cfg: DictConfig, run_ids: Sequence[str], exp: Experiment) -> Path:
    # a fresh folder per run: Lightning resumes from a `last.ckpt` it finds when OnExceptionCheckpoint is used
    if not run_ids:
        name = f"untracked-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{id(exp)}"
    else:
        name = run_ids[0] if len(run_ids) == 1 else f"group-{run_ids[0]}"
    return Path(cfg.trainer.checkpoint_dir) / name


def _fit(
    cfg: DictConfig,
    exp: Experiment,
    loggers: list,
    callbacks: list[Callback],
    ckpt_dir: Path,
    guard: RunGuard,
) -> L.Trainer:
    """Fit ``exp`` with one ``last.ckpt`` (atomic, finite weights only, with the config's hash); an error or
    Ctrl-C propagates to the guard, which marks the runs FAILED or KILLED (metrics kept)."""
    every = cfg.trainer.checkpoint_every_n_steps or None
    if cfg.trainer.steps_per_call != 1:
        exp.module.set_steps_per_call(cfg.trainer.steps_per_call, [every or 0])
    recorder = _InterruptCheckpoint(ckpt_dir)
    all_callbacks: list[Callback] = [
        *exp.callbacks,
        *callbacks,
        recorder,
        ModelCheckpoint(dirpath=ckpt_dir, filename="last", every_n_train_steps=every, enable_version_counter=False),
    ]
    if cfg.trainer.progress_bar:
        all_callbacks.append(StepProgressBar(refresh_steps=max(1, exp.max_steps // 400)))
    trainer = L.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=1,
        max_steps=exp.max_steps,
        max_epochs=-1,
        logger=loggers or False,
        callbacks=all_callbacks,
        enable_progress_bar=cfg.trainer.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=str(ckpt_dir),
        plugins=[SafeCheckpointIO({"config_hash": config_hash(cfg), "config": result_config(cfg)})],
    )
    guard.trainer, guard.checkpoint = trainer, ckpt_dir / "last.ckpt"
    try:
        trainer.fit(exp.module, ckpt_path=cfg.trainer.ckpt_path)
    except SystemExit:
        if isinstance(recorder.exception, KeyboardInterrupt):  # Lightning turned the interrupt into SystemExit
            raise recorder.exception from None
        raise
    return trainer


def _dense_series(module, member: int, schedule=None, final: Optional[tuple[int, float]] = None) -> dict:
    """A member's dense test-error trace (if recorded), the final value appended."""
    if not getattr(module, "trace_every_n_steps", None):
        return {}
    steps, values = module.test_error_trace(member, schedule)
    if final is not None and (not steps or steps[-1] < final[0]):
        steps, values = steps + [final[0]], values + [final[1]]
    return {"test_final_error": (np.asarray(steps), np.asarray(values))}


def _record_member(
    client, run_id: str, cfg: DictConfig, exp: Experiment, e: int, end: int, metrics: dict[str, float]
) -> list[str]:
    """A member's figures, dense test-error trace and text artifacts; returns the figure paths."""
    figures: list[str] = []
    if cfg.log.figures:
        for name, fig in exp.member_figures(e).items():
            figures += log_figure(client, run_id, fig, name, list(cfg.log.get("figure_formats") or ["png"]))
    series = dict(exp.member_traces(e))
    if "test/final_error" in metrics:
        series.update(_dense_series(exp.module, e, exp.schedule, final=(end, metrics["test/final_error"])))
    has_trunk = exp.schedule is not None and exp.schedule.sources[e] is not None
    log_dense(client, run_id, series, since=exp.schedule.starts[e] if has_trunk else 0)  # own steps only
    for name, text in exp.member_texts(e).items():
        client.log_text(run_id, text, name)
    return figures


def _family_summary(cfgs: Sequence[DictConfig], exp: Experiment, summary: dict[str, float]):
    """Each member's headline metrics (a few ``final/*`` keys, added to ``summary``), end-of-run report
    and tables, from its family's optional ``summary`` part; returns ``(reports, tables)``."""
    part, n = family(cfgs[0].kind).summary, len(cfgs)
    if part is None:
        return [""] * n, [{} for _ in cfgs]
    reports, tables = [], []
    for e, cfg in enumerate(cfgs):
        prefix = member_prefix(e, n)
        mine = {k[len(prefix) :]: v for k, v in summary.items() if k.startswith(prefix)}
        summary.update({prefix + k: v for k, v in part.headline(cfg, exp.module, e, mine).items()})
        reports.append(part.report(cfg, exp.module, e))
        tables.append(part.tables(cfg, exp.module, e))
    return reports, tables


def _logger(cfg: DictConfig, exp: Experiment, client, run_ids: Sequence[str]):
    """The run's metric logger, its curves thinned to ``tracking.curve_points``; a member on a shared
    trunk records its own steps and points to the trunk's run."""
    sched = exp.schedule
    spans = list(zip(sched.starts, sched.ends)) if sched is not None else [(0, exp.max_steps)] * len(run_ids)
    for run_id, pointer in zip(run_ids, trunk_tags(run_ids, sched)):
        if pointer:
            tracking.set_tags(client, run_id, pointer)
    thinner = CurveThinner.for_run(cfg.tracking.get("curve_points"), cfg.log.every_n_steps, exp.callbacks, spans)
    return tracking.MemberRouterLogger(
        client, run_ids, sched, background=cfg.tracking.background_writes, thinner=thinner
    )


def _train(
    cfgs: Sequence[DictConfig],
    callbacks: Sequence[Callback],
    tags: Optional[dict[str, Any]],
    parent_run_id: Optional[str],
    member_tags: Optional[Sequence[dict[str, Any]]],
    exp: Experiment,
) -> list[TrainResult]:
    """Fit ``exp`` (member e = ``cfgs[e]``) with one MLflow run per member, and record every member,
    all under one :class:`~cpl.guard.RunGuard` (every way out is FINISHED, FAILED or KILLED)."""
    quiet_lightning()
    first, n = cfgs[0], len(cfgs)
    with RunGuard() as guard:
        client, uri, run_ids = _open_runs(cfgs, tags, member_tags, parent_run_id, guard)
        loggers = [_logger(first, exp, client, run_ids)] if client is not None else []
        guard.loggers, guard.resumable = loggers, n == 1
        ckpt_dir = _checkpoint_dir(first, run_ids, exp)
        guard.spill_to(first.tracking.timeout_s, first.tracking.retries, ckpt_dir / "unsent_metrics.jsonl")
        trainer = _fit(first, exp, loggers, list(callbacks), ckpt_dir, guard)
        ends = exp.schedule.ends if exp.schedule is not None else [trainer.global_step] * n
        summary = final_summary(exp.module)
        reports, tables = _family_summary(cfgs, exp, summary)
        if client is not None:  # the final metrics not logged during training, each member at its own last step
            final = {k: v for k, v in summary.items() if k not in exp.module.last_metrics}
            for lg in loggers:
                for e in range(n):
                    prefix = member_prefix(e, n)
                    lg.log_metrics({k: v for k, v in final.items() if k.startswith(prefix)}, step=ends[e])
                lg.flush()
        out = []
        for e, cfg in enumerate(cfgs):
            prefix = member_prefix(e, n)
            metrics = {k[len(prefix) :]: v for k, v in summary.items() if k.startswith(prefix)}
            out.append(_record(guard, run_ids, cfg, exp, e, ends[e], metrics, tables[e], reports[e], uri, ckpt_dir))
    write_seconds = sum(lg.write_seconds for lg in loggers) / n
    for r in out:
        r.logging_seconds = write_seconds
    _drop_checkpoint(ckpt_dir)
    return out


def _record(guard: RunGuard, run_ids, cfg, exp, e: int, end: int, metrics, tables, report, uri, ckpt_dir):
    """Member e's figures, traces and tables, then its run FINISHED; its :class:`TrainResult`."""
    figures: list[str] = []
    if run_ids:
        client = guard.client
        figures = _record_member(client, run_ids[e], cfg, exp, e, end, metrics)
        for name, text in tables.items():
            client.log_text(run_ids[e], text, name)
        guard.finish(run_ids[e])
    return TrainResult(
        metrics=metrics,
        status="FINISHED",
        run_id=run_ids[e] if run_ids else None,
        tracking_uri=uri,
        checkpoint_dir=str(ckpt_dir),
        figures=figures,
        report=report,
    )


def _drop_checkpoint(ckpt_dir: Path) -> None:
    """A finished run needs no checkpoint: remove ``last.ckpt`` and the run's folder if empty."""
    (ckpt_dir / "last.ckpt").unlink(missing_ok=True)
    try:
        ckpt_dir.rmdir()
    except OSError:
        pass


def train(
    cfg: DictConfig,
    callbacks: Sequence[Callback] = (),
    tags: Optional[dict[str, Any]] = None,
    parent_run_id: Optional[str] = None,
    experiment: Optional[Experiment] = None,
) -> TrainResult:
    """Train one run described by a validated config, tracked in MLflow.

    Args:
        cfg: a config from :func:`cpl.config.load_config` or :func:`cpl.config.make_config`.
        callbacks: extra Lightning callbacks.
        tags: extra MLflow tags.
        parent_run_id: nest the run under this MLflow run (sweeps).
        experiment: a pre-built experiment (module and callbacks) to use instead of ``build(cfg)``.

    Returns:
        :class:`TrainResult` with the final metrics (``test/final_error``, ``sv/effective_rank``, ...).

    Raises:
        cpl.core.module.DivergenceError: the loss became NaN/inf (run marked FAILED).
        cpl.config.ConfigError: a check before the run is created failed (accelerator, tracking URI,
            checkpoint folder, memory, resume checkpoint); no run is created.
        cpl.guard.RunInterrupted: Ctrl-C or SIGTERM (run marked KILLED; ``last.ckpt`` resumes it).
        cpl.tracking.spill.StoreUnreachable: the store did not take metrics in time (run FAILED,
            rows in a spill file for ``cpl replay``).
    """
    validate(cfg)
    precheck([cfg])
    return _train([cfg], callbacks, tags, parent_run_id, None, experiment or build(cfg))[0]


def train_group(
    cfgs: Sequence[DictConfig],
    callbacks: Sequence[Callback] = (),
    tags: Optional[dict[str, Any]] = None,
    parent_run_id: Optional[str] = None,
    member_tags: Optional[Sequence[dict[str, Any]]] = None,
) -> list[TrainResult]:
    """Train several cells as the members of ONE batched run, with one MLflow run per cell.

    Cells that differ only in onset share their pre-training trunk (see :mod:`cpl.batching`);
    the others are independent members. Every cell's run gets its params, config, tags, its full
    metric history (trunk included), final metrics at its own end step and its figures, exactly
    as :func:`train` would record a separate run. Results come back in the order of ``cfgs``.
    ``member_tags`` (one dict per cell, in the order of ``cfgs``) adds tags to each cell's run.

    Raises:
        ValueError: the cells cannot share a module (see :func:`cpl.batching.batch_key`).
        Whatever :func:`train` raises; every cell's run is then marked FAILED or KILLED.
    """
    for cfg in cfgs:
        validate(cfg)
    if member_tags is not None and len(member_tags) != len(cfgs):
        raise ValueError(f"Expected one `member_tags` dict per cell ({len(cfgs)}), got {len(member_tags)}")
    if len(cfgs) == 1 and not batchable(cfgs[0]):
        return [
            train(
                cfgs[0],
                callbacks=callbacks,
                tags={**(tags or {}), **(member_tags[0] if member_tags else {})},
                parent_run_id=parent_run_id,
            )
        ]
    if not all(batchable(c) for c in cfgs) or len({batch_key(c) for c in cfgs}) > 1:
        raise ValueError(
            "train_group: these cells cannot be members of one module (different kind, depth, size, lr, dtype, "
            "logging or tracking, or an ODE/resume)"
        )
    order, schedule = plan_members(cfgs)
    ordered = [cfgs[i] for i in order]
    precheck(ordered)
    results = _train(
        ordered,
        callbacks,
        tags,
        parent_run_id,
        [member_tags[i] for i in order] if member_tags else None,
        build(ordered, schedule),
    )
    out: list[Optional[TrainResult]] = [None] * len(cfgs)
    for e, i in enumerate(order):
        out[i] = results[e]
    return out  # type: ignore[return-value]
