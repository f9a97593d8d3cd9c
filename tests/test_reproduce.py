"""`cpl reproduce`: the claim registry, the measures against hand computations, a real run of a
subset (report files, MLflow run, resume), a deliberately broken run, and the whole quick profile (slow)."""

from __future__ import annotations

import json
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from cpl.cli.options import StoreOptions
from cpl.config import ConfigError, available_confs, conf_dir
from cpl.reproduce import ReproduceOptions, main
from cpl.reproduce.command import _prepare, run
from cpl.reproduce.declarations import PROFILES, load
from cpl.reproduce.measures import MEASURES, reduce_values, strengths
from cpl.reproduce.results import Results, SweepOutcome

pytestmark = pytest.mark.usefixtures("one_thread")

#: the claims of docs/paper-setup.md (part B's list and part A's figure statements) and issue 15's additions
PAPER_CLAIMS = {
    "fig1_7": 3,
    "fig2": 5,
    "fig2_depth": 1,
    "fig3": 2,
    "fig4": 5,
    "fig5": 3,
    "fig6": 2,
    "fig8": 2,
    "fig9": 1,
    "fig10": 1,
    "partial_depth": 2,
    "nonlinear": 5,
}


# --------------------------------------------------------------------------- the registry


@pytest.mark.parametrize("profile", PROFILES)
def test_every_claim_names_existing_confs_jobs_and_figures(profile):
    decl = load(profile)
    confs = set(available_confs())
    for job in decl.jobs.values():
        assert job.kind == "phase" or job.conf in confs, job.name
        assert job.figure in decl.figures
    counts = {f: 0 for f in decl.figures}
    for c in decl.claims:
        assert c.measure["kind"] in MEASURES
        assert all(j in decl.jobs for j in c.jobs)
        assert c.claim and c.source and c.test in ("<", "<=", ">", ">=")
        counts[c.figure] += 1
    assert counts == PAPER_CLAIMS
    assert [c.id for c in decl.claims if c.observation] == [
        "nonlinear_tanh_early",
        "nonlinear_relu_early",
        "nonlinear_late",
    ]


def test_profiles_use_the_quick_confs_and_their_onsets():
    quick, full = load("quick"), load("full")
    assert quick.jobs["fig4_depth"].conf == "matcomp_depth_sweep_quick"
    assert full.jobs["fig4_depth"].conf == "matcomp_depth_sweep"
    ratio = {d.profile: next(c for c in d.claims if c.id == "fig4_depth3_damage").measure for d in (quick, full)}
    assert ratio["quick"]["min_onset"] == 400 and ratio["full"]["min_onset"] == 20000
    sub = quick.select(["fig3", "fig9"])
    assert set(sub.jobs) == {"fig3", "fig9"} and {c.figure for c in sub.claims} == {"fig3", "fig9"}


def _conf_copy(tmp_path: Path) -> Path:
    shutil.copytree(conf_dir(), tmp_path / "conf")
    return tmp_path / "conf"


@pytest.mark.parametrize(
    "old, new, match",
    [
        ("conf: multipath_lesion", "conf: multipath_lesions", r"'jobs.fig3.conf': got 'multipath_lesions'; allowed"),
        (
            "{kind: share, job: fig3,",
            "{kind: shares, job: fig3,",
            r"'claims.fig3_lesioned_mode.measure.kind': got 'shares'",
        ),
        (
            "{kind: share, job: fig3,",
            "{kind: share, job: fig33,",
            r"'claims.fig3_lesioned_mode.measure.job': got 'fig33'",
        ),
        (
            "pathway: b, modes: [2]",
            "pathway: b, mode: [2]",
            r"'claims.fig3_lesioned_mode.measure': got .*arguments of share",
        ),
        (
            "variant: early, pathway: a, reduce: min}",
            "variant: erly, pathway: a, reduce: min}",
            r"variant': got 'erly'",
        ),
    ],
)
def test_declaration_errors_are_one_line(tmp_path, old, new, match):
    d = _conf_copy(tmp_path)
    for name in ("jobs.yaml", "claims.yaml"):
        path = d / "reproduce" / name
        path.write_text(path.read_text().replace(old, new, 1))
    with pytest.raises(ConfigError, match=match) as err:
        load("quick", d)
    assert "\n" not in str(err.value)


def test_command_errors(capsys):
    assert main(["profile=fast"]) == 2
    assert "Invalid value for 'profile': got 'fast'; allowed: quick or full" in capsys.readouterr().err
    assert main(["only=fig99"]) == 2
    assert "Invalid value for 'only': got ['fig99']" in capsys.readouterr().err
    assert main(["--help"]) == 0 and "profile=quick|full" in capsys.readouterr().out


# --------------------------------------------------------------------------- measures on hand-made runs


@dataclass
class _M:
    step: int
    value: float
    timestamp: int = 0


class FakeClient:
    """Runs as dicts: ``metrics[run][key] = [(step, value), ...]`` and ``params[run]``."""

    def __init__(self, metrics, params):
        self.m, self.p = metrics, params

    def get_run(self, run_id):
        class R:
            pass

        r = R()
        r.data = R()
        r.data.metrics = {k: v[-1][1] for k, v in self.m[run_id].items()}
        r.data.params = self.p.get(run_id, {})
        return r

    def get_metric_history(self, run_id, key):
        return [_M(s, v) for s, v in self.m[run_id][key]]


def _multipath_run(ka, kb, s, onset_ka=None, onset_kb=None, onset=400):
    """A two-pathway run's metrics: strengths at the end (step 1000) and, optionally, at the onset."""
    out = {}
    for p, end, mid in (("a", ka, onset_ka), ("b", kb, onset_kb)):
        for i, v in enumerate(end):
            out[f"pathway_{p}_ref/{i + 1}"] = ([(onset, mid[i])] if mid is not None else []) + [(1000, v)]
    mids = None if onset_ka is None else np.add(onset_ka, onset_kb)
    for i, si in enumerate(s):
        out[f"train/mode_error_{i + 1}"] = ([(onset, si - mids[i])] if mids is not None else []) + [
            (1000, si - ka[i] - kb[i])
        ]
    return out


def _results(runs, params=None, sweeps=()):
    res = Results(FakeClient(runs, params or {}))
    for job, variant, rows, onset_key in sweeps:
        res.sweeps[(job, variant)] = SweepOutcome(job, variant, job, "parent", onset_key, rows)
    return res


def _row(run_id, cell=0, **values):
    return {"cell": cell, "status": "FINISHED", "resumed": False, "run_id": run_id, **values}


def test_share_and_strengths_by_hand():
    s = [3.0, 2.0, 1.0]
    runs = {"r": _multipath_run([2.9, 0.2, 0.01], [0.1, 1.7, 0.01], s)}
    k, s_read = strengths(FakeClient(runs, {}).get_run("r").data.metrics)
    assert np.allclose(s_read, s) and np.allclose(k["a"], [2.9, 0.2, 0.01])
    res = _results(runs, sweeps=[("j", "", [_row("r")], None)])
    # mode 3 holds 0.02 / 1.0 < LEARNED = 0.05 of its singular value: no share
    value, _ = MEASURES["share"](res, job="j", pathway="a", reduce="min")
    assert value == pytest.approx(0.2 / 1.9)
    assert MEASURES["share"](res, job="j", pathway="b", modes=[2], reduce="min")[0] == pytest.approx(1.7 / 1.9)
    assert MEASURES["share"](res, job="j", pathway="b", exclude=[2], reduce="max")[0] == pytest.approx(0.1 / 3.0)


def test_share_shift_selects_modes_by_their_state_at_the_onset():
    s = [3.0, 1.0]
    runs = {
        "none": _multipath_run([1.5, 0.5], [1.5, 0.5], s),
        # at the onset (step 400) mode 1 is learned (2.9/3), mode 2 not (0.1/1); after: a takes mode 2
        "mid": _multipath_run([1.52, 0.95], [1.48, 0.05], s, onset_ka=[1.45, 0.05], onset_kb=[1.45, 0.05]),
    }
    params = {"mid": {"deficit.start": "400", "deficit.end": "550"}}
    res = _results(runs, params, [("j", "none", [_row("none")], None), ("j", "mid", [_row("mid")], None)])
    learned, detail = MEASURES["share_shift"](
        res, job="j", variant="mid", reference="none", pathway="a", select="learned"
    )
    assert learned == pytest.approx(1.52 / 3.0 - 0.5) and "learned modes at step 400: [1]" in detail
    unlearned, _ = MEASURES["share_shift"](
        res, job="j", variant="mid", reference="none", pathway="a", select="unlearned", reduce="min"
    )
    assert unlearned == pytest.approx(0.95 - 0.5)


def test_sweep_measures_by_hand():
    rows = [
        _row(f"r{i}", i, **{"model.depth": d, "switch.at_step": t, "test/final_error": e, "relative_error": e - e0})
        for i, (d, t, e, e0) in enumerate(
            [(1, 0, 0.8, 0.8), (1, 2000, 0.8001, 0.8), (3, 0, 1e-4, 1e-4), (3, 800, 0.05, 1e-4), (3, 2000, 0.3, 1e-4)]
        )
    ]
    runs = {r["run_id"]: {"sv/numerical_rank": [(100, 5.0 + r["cell"])]} for r in rows}
    res = _results(runs, sweeps=[("j", "", rows, "switch.at_step")])
    assert MEASURES["sweep_value"](res, job="j", where={"model.depth": 1}, key="relative_error", reduce="maxabs")[
        0
    ] == pytest.approx(1e-4)
    last = MEASURES["sweep_value"](res, job="j", key="relative_error", onset="last", reduce="min")[0]
    assert last == pytest.approx(1e-4)  # depth 1 at onset 2000
    assert (
        MEASURES["sweep_value"](res, job="j", where={"model.depth": 3}, key="sv/numerical_rank", onset="last")[0] == 9
    )
    ratio, _ = MEASURES["error_ratio"](res, job="j", where={"model.depth": 3}, min_onset=800)
    assert ratio == pytest.approx(0.05 / 1e-4)
    inc, _ = MEASURES["increasing"](res, job="j", by="model.depth", key="relative_error", onset="last")
    assert inc == pytest.approx((0.3 - 1e-4) - 1e-4)
    assert reduce_values(np.array([0.4, 0.7]), "maxdev") == pytest.approx(0.2)


def test_ode_gap_splits_the_phases():
    hist = [(0, 1e-9), (100, 2e-9), (200, 5e-5), (300, 3e-9)]
    res = _results(
        {"r": {"ode/deviation": hist}},
        {"r": {"deficit.start": "150", "deficit.end": "250", "deficit.enabled": "True"}},
        [("j", "", [_row("r")], None)],
    )
    value, detail = MEASURES["ode_gap"](res, job="j")
    assert value == 5e-5 and "before 2e-09" in detail and "during 5e-05" in detail and "after 3e-09" in detail


def test_a_claim_that_cannot_be_measured_fails():
    from cpl.reproduce.report import check_claims

    rows = check_claims(load("quick").select(["fig3"]), _results({}))  # nothing ran
    assert [r["id"] for r in rows] == ["fig3_lesioned_mode", "fig3_other_modes"]
    assert all(r["passed"] is False and np.isnan(r["value"]) and "did not run" in r["detail"] for r in rows)


# --------------------------------------------------------------------------- real runs


def _options(tmp_path, only):
    return ReproduceOptions(
        profile="quick",
        only=only,
        out=str(tmp_path / "reports"),
        progress=False,
        tracking=StoreOptions(uri=f"sqlite:///{tmp_path}/m.db"),
    )


def test_fig3_reproduced_reported_logged_and_resumed(tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # from any folder
    uri = f"sqlite:///{tmp_path}/m.db"
    argv = ["profile=quick", "only=fig3", f"tracking.uri={uri}", "out=reports", "progress=false"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "fig3_lesioned_mode" in printed and "2/2 claims hold" in printed
    folder = next((tmp_path / "reports").iterdir())
    assert folder.name.endswith("-quick-fig3")
    claims = json.loads((folder / "claims.json").read_text())
    assert [c["id"] for c in claims] == ["fig3_lesioned_mode", "fig3_other_modes"]
    assert all(c["passed"] is True and {"id", "claim", "value", "threshold", "passed"} <= set(c) for c in claims)
    pngs = sorted(p.name for p in (folder / "figures").iterdir())
    assert pngs == ["fig3_cell0_pathway_strengths.pdf", "fig3_cell0_pathway_strengths.png"]
    html = (folder / "index.html").read_text()
    assert "figures/fig3_cell0_pathway_strengths.png" in html and "PASS" in html
    assert "fig3_lesioned_mode" in (folder / "report.md").read_text()
    # the MLflow run "reproduce": the same numbers as the report, the report as artifacts, links to the runs
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("cpl")
    parent = client.search_runs([exp.experiment_id], "attributes.run_name = 'reproduce'")[0]
    for c in claims:
        assert parent.data.metrics[f"claim/{c['id']}"] == c["value"]
        assert parent.data.tags[f"claim.{c['id']}"] == "PASS"
    arts = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/index.html", "report/claims.json", "report/report.md", "report/figures"} <= arts
    used = parent.data.tags["run.fig3"]
    assert client.get_run(used).data.tags["cpl.sweep.role"] == "parent"
    # the measured values, from the run itself: share of b per mode = K_b / (K_a + K_b)
    cell = claims[0]["runs"][1]
    m = client.get_run(cell).data.metrics
    kb, ka = m["pathway_b_ref/2"], m["pathway_a_ref/2"]
    assert claims[0]["value"] == pytest.approx(kb / (ka + kb), abs=1e-12)
    # a second invocation reuses the finished run
    n_runs = len(client.search_runs([exp.experiment_id]))
    assert main(argv) == 0
    assert len(client.search_runs([exp.experiment_id])) == n_runs + 1  # only a new "reproduce" run
    assert "cells run now / read back: 0 / 1" in (folder / "report.md").read_text()


def test_a_broken_run_fails_its_claims(tmp_path, capsys):
    """Fig. 3 without its deficit and lesion: pathway b no longer holds mode 2, the claim fails, exit 1."""
    o = _options(tmp_path, "fig3")
    decl, _, uri = _prepare(o)
    decl.jobs["fig3"].overrides += ["deficit.enabled=false", "lesion.enabled=false"]
    from cpl.reproduce.runner import plan_sweeps

    sweeps = plan_sweeps(decl, [f"tracking.uri={uri}"])
    code, rows, folder, _ = run(o, (decl, sweeps, uri))
    by_id = {r["id"]: r for r in rows}
    assert code == 1
    assert by_id["fig3_lesioned_mode"]["passed"] is False
    assert by_id["fig3_lesioned_mode"]["value"] == pytest.approx(0.5, abs=0.01)  # symmetric pathways: half each
    assert by_id["fig3_other_modes"]["passed"] is False
    assert "FAILED: fig3_lesioned_mode, fig3_other_modes" in capsys.readouterr().out
    assert [c["passed"] for c in json.loads((folder / "claims.json").read_text())] == [False, False]


@pytest.mark.slow
def test_reproduce_quick_passes_every_claim(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    code = main(["profile=quick", f"tracking.uri=sqlite:///{tmp_path}/m.db", "progress=false"])
    seconds = time.perf_counter() - t0
    assert code in (0, 1)  # it ran (2: bad arguments)
    claims = json.loads(next((tmp_path / "reports").iterdir()).joinpath("claims.json").read_text())
    print(f"\nreproduce quick: {seconds:.0f} s; " + ", ".join(f"{c['id']}={c['value']:.3g}" for c in claims))
    assert code == 0 and all(c["passed"] is not False for c in claims)
    if seconds > 600:  # the budget on 2 quiet cores; a shared CI machine may be slower, so no assert
        warnings.warn(f"reproduce quick took {seconds:.0f} s, over its 10-minute budget", stacklevel=1)


def test_jobs_on_a_process_pool_run_their_cells(tmp_path):
    """The full profile's onset sweeps run on a process pool (sweep.processes: 0): the job's callbacks
    must reach the workers (its bar stays here) and every cell finish."""
    from types import SimpleNamespace

    from cpl.reproduce.runner import run_jobs
    from cpl.sweep import make_sweep
    from test_sweep import tiny_base

    sweep = make_sweep(
        tiny_base(tmp_path), name="pooled", grid={"model.depth": [1, 2], "switch.at_step": [0, 100]}, batched=True
    )
    sweep.settings.processes = 2
    res = run_jobs(SimpleNamespace(jobs={}, profile="test"), {("pooled", ""): sweep}, client=None, progress=True)
    rows = res.sweeps[("pooled", "")].rows
    assert [r["status"] for r in rows] == ["FINISHED"] * 4, [r.get("error") for r in rows]


def test_a_figure_without_its_pdf_is_reported_without_a_pdf_link(tmp_path):
    """A sweep recorded with log.figure_formats=[png] (reused by a later reproduce): the report shows
    its PNG without a PDF link instead of failing after the runs; a missing PNG still fails."""
    from types import SimpleNamespace

    from cpl.reproduce.report import _markdown, collect_figures

    class Client:
        def download_artifacts(self, run_id, path, dst):
            if path.endswith(".pdf") and run_id == "png-only":
                raise RuntimeError(f"Failed to download artifacts from path '{path}'")
            Path(dst).mkdir(parents=True, exist_ok=True)
            (Path(dst) / Path(path).name).write_bytes(b"x")
            return str(Path(dst) / Path(path).name)

    job = SimpleNamespace(artifacts={"parent": ["summary/relative_error.png"]}, figure="fig4")
    decl = SimpleNamespace(figures={"fig4": "Fig. 4"}, jobs={"a": job, "b": job}, profile="test")
    sweeps = {("a", ""): SimpleNamespace(parent_run_id="both"), ("b", ""): SimpleNamespace(parent_run_id="png-only")}
    res = SimpleNamespace(sweeps=sweeps, client=Client(), phase={})
    figs = collect_figures(decl, res, tmp_path)
    assert figs["fig4"] == ["figures/a_summary_relative_error.png", "figures/b_summary_relative_error.png"]
    md = _markdown(decl, [], figs, {}, tmp_path)
    assert "[PDF](figures/a_summary_relative_error.pdf)" in md and "b_summary_relative_error.pdf" not in md

    job.artifacts = {"parent": ["summary/missing.png"]}
    res.client.download_artifacts = lambda *a: (_ for _ in ()).throw(RuntimeError("no such artifact"))
    with pytest.raises(RuntimeError, match="no such artifact"):
        collect_figures(decl, res, tmp_path)
