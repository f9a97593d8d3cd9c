"""Bounded tracking: MLflow curves thinned to ``tracking.curve_points`` (switch points, first and
last step kept), dense traces in one compressed artifact that round-trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import small_matcomp
from cpl.run import build, train, train_group
from cpl.tracking.dense import load_dense, log_dense
from cpl.tracking.logger import CurveThinner

pytestmark = pytest.mark.usefixtures("one_thread")


def _curves(client, run_id):
    keys = client.get_run(run_id).data.metrics
    return {k: [m.step for m in client.get_metric_history(run_id, k)] for k in keys}


def test_thinner_budget_and_kept_steps():
    for points, every, span, keep in [
        (100, 100, (0, 130000), {20000}),
        (10, 1, (7, 95), {33, 41}),
        (1000, 10, (0, 50), set()),
    ]:
        t = CurveThinner(points, every, [span], [keep])
        steps = [s for s in range(span[0], span[1] + 1) if s % every == 0 or s in keep or s in span]
        kept = [s for s in steps if t.keeps(0, s)]
        assert len(kept) <= points and set(span) | keep <= set(kept)
        assert len(kept) >= min(points, len(steps)) // 3  # thinned, not emptied


def test_run_curves_stay_within_the_budget_and_keep_the_switch(tmp_path):
    cfg = small_matcomp(
        tmp_path,
        switch={"at_step": 37},
        train={"steps_after_switch": 53},
        log={"every_n_steps": 1, "sv_every_n_steps": 1},
        tracking={"curve_points": 12},
    )
    result = train(cfg)
    client = MlflowClient(cfg.tracking.uri)
    curves = _curves(client, result.run_id)
    for key in ("train/loss", "test/final_error", "sv/1", "sv_ref/3"):
        steps = curves[key]
        assert len(steps) <= 12 and {0, 37, 90} <= set(steps), (key, steps)
    assert curves["task/switched"] == [37]
    # unthinned, the same run logs every step; the kept points carry the same values
    full = train(
        small_matcomp(tmp_path, **{k: cfg[k] for k in ("switch", "train", "log")}, tracking={"curve_points": None})
    )
    full_loss = {m.step: m.value for m in client.get_metric_history(full.run_id, "train/loss")}
    assert len(full_loss) == 91
    for m in client.get_metric_history(result.run_id, "train/loss"):
        assert m.value == full_loss[m.step]


def test_group_members_keep_their_own_switch_and_end(tmp_path):
    onsets = [0, 13, 33]
    cells = [
        small_matcomp(
            tmp_path,
            switch={"at_step": t},
            train={"steps_after_switch": 40},
            log={"every_n_steps": 1},
            tracking={"curve_points": 10},
        )
        for t in onsets
    ]
    results = train_group(cells)
    client = MlflowClient(cells[0].tracking.uri)
    for t, res in zip(onsets, results):
        steps = _curves(client, res.run_id)["test/final_error"]
        assert len(steps) <= 10 and {t, t + 40} <= set(steps), (t, steps)


def test_dense_artifact_round_trips(tmp_path):
    cfg = small_matcomp(tmp_path, log={"trace_every_n_steps": 1})
    exp = build(cfg)
    result = train(cfg, experiment=exp)
    client = MlflowClient(cfg.tracking.uri)
    dense = load_dense(client, result.run_id)
    assert {a.path for a in client.list_artifacts(result.run_id, "traces")} == {"traces/dense.npz"}
    steps, err = dense["test_final_error"]
    assert steps.tolist() == list(range(61))
    fin = exp.module.targets[exp.module.final_index, 0]
    assert err[-1] == pytest.approx(float((exp.module.end_to_end()[0] - fin).pow(2).mean()), rel=1e-5)
    sv_steps, sv = dense["singular_values"]
    assert sv_steps.tolist() == list(range(0, 61, 5))
    np.testing.assert_allclose(sv[-1], torch.linalg.svdvals(exp.module.end_to_end()[0].double())[:5].numpy(), rtol=1e-5)
    # any arrays, cut at `since`, come back exactly
    rng = np.random.default_rng(0)
    series = {
        "a": (np.arange(0, 100, 10), rng.normal(size=(10, 3)).astype(np.float32)),
        "b": (np.arange(5), np.arange(5.0)),
    }
    run_id = client.create_run(client.get_run(result.run_id).info.experiment_id).info.run_id
    assert log_dense(client, run_id, series, since=30) > 0
    back = load_dense(client, run_id)
    np.testing.assert_array_equal(back["a"][0], np.arange(30, 100, 10))
    np.testing.assert_array_equal(back["a"][1], series["a"][1][3:])
    assert back["a"][1].dtype == np.float32 and "b" not in back  # no step of b is >= 30
