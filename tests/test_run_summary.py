"""What a run says about its result: the two-pathway shares per mode (who won) against an
independent projection of the trained weights, and the report and table a run writes."""

from __future__ import annotations

import csv
import io
import math

import pytest
import torch
from mlflow.tracking import MlflowClient

from cpl.cli import main
from cpl.config import load_config
from cpl.families.multipath import summary
from cpl.run import build

pytestmark = pytest.mark.usefixtures("one_thread")


def _trained_module(steps: int = 300):
    """The Fig. 3 network (no lesion: no callbacks) after a few hundred plain autograd steps."""
    module = build(load_config("multipath_lesion")).module
    opt = torch.optim.SGD(module.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        module.loss().backward()
        opt.step()
    return module


def test_shares_are_each_pathways_part_of_every_mode():
    module = _trained_module()
    u, v = module.basis_u[0], module.basis_v[0]
    k = {}
    for name in ("a", "b"):
        w = torch.eye(module.model.in_dim, dtype=u.dtype)
        for layer in module.model.pathways[name].factors:  # W_P = W_D ... W_1, by hand
            w = layer[0] @ w
        k[name] = torch.diagonal(u.T @ w @ v)  # K_{P,i} = u_i^T W_P v_i
    rows = summary.share_rows(module)
    assert [r["mode"] for r in rows] == list(range(1, 9))
    learned = 0
    for i, r in enumerate(rows):
        total = float(k["a"][i] + k["b"][i])
        assert r["K_a"] == pytest.approx(float(k["a"][i]), abs=1e-10)
        assert r["K_b"] == pytest.approx(float(k["b"][i]), abs=1e-10)
        if total >= summary.LEARNED * float(module.singular_values[0, i]):
            learned += 1
            assert r["share_a"] == pytest.approx(float(k["a"][i]) / total) and r["share_a"] + r[
                "share_b"
            ] == pytest.approx(1)
            assert r["winner"] == ("a" if r["share_a"] > 0.5 else "b" if r["share_b"] > 0.5 else "-")
        else:
            assert math.isnan(r["share_a"]) and r["winner"] == "-"
    assert learned >= 2  # the check above compared real shares
    head = summary.headline(None, module, 0, {"train/loss": 1.5})
    total = float(sum(k["a"]) + sum(k["b"]))
    assert head["final/share_a"] == pytest.approx(float(sum(k["a"])) / total)
    assert head["final/won_modes_a"] + head["final/won_modes_b"] == sum(r["winner"] != "-" for r in rows)
    assert head["final/train_loss"] == 1.5


def test_a_multipath_run_prints_and_logs_its_shares(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/m.db"
    args = ["train.max_steps=120", "ode.enabled=false", "log.figures=false", "trainer.progress_bar=false"]
    assert main(["train", "conf=multipath_lesion", *args, f"tracking.uri={uri}", "optim.lr=0.05"]) == 0
    out = capsys.readouterr().out
    assert "Pathway shares per mode at the end" in out and "pathway a holds" in out
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("cpl").experiment_id])
    assert run.info.run_name == "multipath_lesion max_steps=120 ode.enabled=false lr=0.05"
    text = open(client.download_artifacts(run.info.run_id, "tables/pathway_shares.csv", str(tmp_path))).read()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 8 and set(rows[0]) == {"mode", "s", "K_a", "K_b", "share_a", "share_b", "winner"}
    for r in rows:  # the printed table is the artifact's
        shares = f"{float(r['share_a']):9.3f} {float(r['share_b']):9.3f}"
        line = f"{int(r['mode']):4d} {float(r['s']):7.3f} {shares}  {r['winner']}"
        assert line in out
    total_a = sum(float(r["K_a"]) for r in rows)
    total = total_a + sum(float(r["K_b"]) for r in rows)
    assert run.data.metrics["final/share_a"] == pytest.approx(total_a / total)
    assert run.data.metrics["final/won_modes_b"] == sum(r["winner"] == "b" for r in rows)
