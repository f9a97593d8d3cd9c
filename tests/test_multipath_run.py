"""Runs of the multipath family: the ODE reference against gradient descent, the paper's Fig. 2
and Fig. 3 claims read from the logged metrics, resume inside a deficit, confs and config errors."""

from __future__ import annotations

import glob
import warnings

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import Logger

from cpl.callbacks import ODEReference
from cpl.config import ConfigError, available_confs, load_config, make_config
from cpl.run import build

pytestmark = pytest.mark.usefixtures("one_thread")
warnings.filterwarnings("ignore", ".*does not have many workers.*")


class MemoryLogger(Logger):
    """Keeps every logged metric: ``metrics[key][step] = value``."""

    def __init__(self):
        super().__init__()
        self.metrics: dict[str, dict[int, float]] = {}

    @property
    def name(self):
        return "memory"

    @property
    def version(self):
        return 0

    def log_metrics(self, metrics, step=None):
        for k, v in metrics.items():
            self.metrics.setdefault(k, {})[int(step)] = float(v)

    def log_hyperparams(self, params, *args, **kwargs):
        return None

    def at(self, key: str, step: int) -> float:
        return self.metrics[key][step]

    def strengths(self, pathway: str, step: int, k: int = 8) -> np.ndarray:
        """K_{pathway, i} for i = 1..k, as logged by the pathway's SingularValueLogger."""
        return np.array([self.at(f"pathway_{pathway}_ref/{i + 1}", step) for i in range(k)])


def run(conf="multipath_depth4_gating", **overrides):
    """Train a conf (or a loaded config) for its full length with a :class:`MemoryLogger`."""
    cfg = conf if not isinstance(conf, str) else load_config(conf, [f"{k}={v}" for k, v in overrides.items()])
    exp = build(cfg)
    mem = MemoryLogger()
    L.Trainer(
        max_steps=exp.max_steps,
        max_epochs=-1,
        logger=[mem],
        callbacks=exp.callbacks,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    ).fit(exp.module)
    ode = next((c for c in exp.callbacks if isinstance(c, ODEReference)), None)
    return exp, mem, ode


S = np.sqrt([15, 7, 3, 3, 1, 1, 1, 1])


def share_a(mem: MemoryLogger, step: int = 1000) -> np.ndarray:
    ka, kb = mem.strengths("a", step), mem.strengths("b", step)
    return ka / (ka + kb)


def per_mode_rel_deviation(ode: ODEReference) -> float:
    """max over steps, pathways and modes of |K_ode - K_sgd| / |K_ode| (modes that are not lesioned)."""
    h = ode.history()
    worst = 0.0
    for key, ref in h["ode"].items():
        got = h["sgd"][key]
        live = np.abs(ref) > 1e-9
        worst = max(worst, float(np.max(np.abs(ref - got)[live] / np.abs(ref)[live])))
        assert np.all(np.abs(got[~live]) < 1e-9)
    return worst


@pytest.fixture(scope="module")
def fig2():
    """The four Fig. 2 runs at D = 4: no deficit, early (0-150), middle (400-550), late (750-900)."""
    runs = {"none": run(**{"deficit.enabled": "false"})}
    for label, (a, b) in {"early": (0, 150), "middle": (400, 550), "late": (750, 900)}.items():
        runs[label] = run(**{"deficit.start": a, "deficit.end": b})
    return runs


def test_discrete_reference_matches_gradient_descent_per_mode(fig2):
    for label, (_, _, ode) in fig2.items():
        rel = per_mode_rel_deviation(ode)
        print(
            f"\n{label}: max per-mode relative deviation, exact discrete map vs GD: {rel:.2e} (ODEReference "
            f"rel_deviation {ode.max_rel_deviation:.2e})"
        )
        assert rel < 1e-4 and ode.max_rel_deviation < 1e-4
        assert ode.warning is None
        assert ode.history()["steps"][-1] == 1000


def test_fig2_early_deficit_pushes_every_mode_into_a(fig2):
    _, mem, _ = fig2["early"]
    share = share_a(mem)
    print("\nearly deficit, share of a per mode:", np.round(share, 3))
    assert np.all(share > 0.9)
    total = mem.strengths("a", 1000) + mem.strengths("b", 1000)
    assert np.allclose(total, S, rtol=1e-2)  # every mode learned
    assert mem.at("gate/b/active", 0) == 1.0 and mem.at("gate/b/active", 150) == 0.0


def test_fig2_late_deficit_changes_nothing(fig2):
    none, late = share_a(fig2["none"][1]), share_a(fig2["late"][1])
    print("\nno deficit:", np.round(none, 3), "\nlate deficit:", np.round(late, 3))
    assert np.allclose(none, 0.5, atol=0.01)
    assert np.all(np.abs(late - none) < 0.05)


def test_fig2_middle_deficit_only_moves_modes_not_yet_learned(fig2):
    _, mem, _ = fig2["middle"]
    at_onset = (mem.strengths("a", 400) + mem.strengths("b", 400)) / S
    learned, unlearned = at_onset > 0.9, at_onset < 0.5
    share, none = share_a(mem), share_a(fig2["none"][1])
    print("\nmiddle deficit: learned fraction at step 400:", np.round(at_onset, 3), "share of a:", np.round(share, 3))
    assert learned.any() and unlearned.any() and np.all(learned | unlearned)
    assert np.all(np.abs(share[learned] - none[learned]) < 0.05)
    assert np.all(share[unlearned] > none[unlearned] + 0.2)


def test_fig3_lesion_deprived_pathway_learns_only_the_lesioned_mode():
    exp, mem, ode = run("multipath_lesion")
    kb, ka = mem.strengths("b", 1000), mem.strengths("a", 1000)
    share_b = kb / (ka + kb)
    print(
        "\nFig. 3: share of b per mode:",
        np.round(share_b, 3),
        f"(ODE per-mode rel. deviation {per_mode_rel_deviation(ode):.1e})",
    )
    assert abs(kb[1] - S[1]) / S[1] < 0.01 and abs(ka[1]) < 1e-9  # b holds mode 2, a's mode 2 is lesioned
    assert np.all(np.delete(share_b, 1) < 0.1)
    assert per_mode_rel_deviation(ode) < 1e-4
    assert mem.at("lesion/a_mode1/active", 0) == 1.0


def test_flow_reference_is_within_order_lr():
    _, _, ode = run(**{"ode.kind": "flow"})
    print(
        f"\nsolve_ivp gradient flow vs GD at lr 0.01: max |dK| = {ode.max_deviation:.4f}, relative "
        f"{ode.max_rel_deviation:.4f}"
    )
    assert ode.reference.name == "gradient flow (solve_ivp)"
    assert 1e-3 < ode.max_deviation < 0.4 and ode.max_rel_deviation < 0.25  # O(lr): see the slow test for the scaling


@pytest.mark.slow
def test_flow_reference_deviation_halves_with_lr():
    devs = {}
    for lr, steps, end in ((0.01, 1000, 150), (0.005, 2000, 300)):
        _, _, ode = run(
            **{"ode.kind": "flow", "optim.lr": lr, "train.max_steps": steps, "deficit.end": end, "ode.every_n_steps": 1}
        )
        devs[lr] = ode.max_deviation
    print(f"\nsolve_ivp vs GD max |dK|: lr 0.01: {devs[0.01]:.4f}, lr 0.005: {devs[0.005]:.4f}")
    assert 1.7 < devs[0.01] / devs[0.005] < 2.3


def test_gaussian_init_reference_warns_that_it_is_approximate():
    with pytest.warns(UserWarning, match="not the aligned balanced SVD init"):
        _, _, ode = run(**{"model.init": "gaussian", "model.width": 16, "train.max_steps": 20, "deficit.end": 10})
    assert "only approximate" in ode.warning


class Interrupt(L.Callback):
    def __init__(self, at: int):
        self.at = at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at:
            raise KeyboardInterrupt


def test_resume_in_the_middle_of_a_deficit(tmp_path):
    from mlflow.tracking import MlflowClient

    from cpl.run import build, train

    base = [
        f"tracking.uri=sqlite:///{tmp_path}/m.db",
        f"trainer.checkpoint_dir={tmp_path}",
        "trainer.progress_bar=false",
        "train.max_steps=300",
        "deficit.start=50",
        "deficit.end=200",
        "model.width=20",
        "ode.every_n_steps=25",
    ]
    full = build(load_config("multipath_depth4_gating", base))
    full_run = train(load_config("multipath_depth4_gating", base), experiment=full)
    base.append("log.figures=false")  # the interrupted run and its resumption: one config
    with pytest.raises(KeyboardInterrupt):
        train(load_config("multipath_depth4_gating", base), callbacks=[Interrupt(120)])
    ckpt = [p for p in glob.glob(f"{tmp_path}/*/last.ckpt")]
    assert len(ckpt) == 1  # the finished run deleted its own; the interrupted one keeps one
    assert torch.load(ckpt[0], weights_only=False)["global_step"] == 120
    cfg = load_config("multipath_depth4_gating", base + [f"trainer.ckpt_path={ckpt[0]}"])
    resumed = build(cfg)
    resumed_run = train(cfg, experiment=resumed)
    a, b = full.module.state_dict(), resumed.module.state_dict()
    for key, value in a.items():
        assert torch.allclose(value, b[key], rtol=0, atol=1e-12), key
    gate_state = [c.state_dict() for c in resumed.callbacks if type(c).__name__ == "GatingDeficit"][0]
    assert gate_state["active_steps"] == 150  # 70 before the interrupt + 80 after
    # what the uninterrupted run recorded in MLflow
    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    metrics = client.get_run(full_run.run_id).data.metrics
    for key in (
        "pathway_a_ref/1",
        "pathway_b_ref/8",
        "ode/K_a_1",
        "sgd/K_b_8",
        "ode/rel_deviation",
        "gate/b/active",
        "train/loss",
        "train/mode_error_1",
    ):
        assert key in metrics, key
    assert metrics["ode/rel_deviation"] < 1e-4
    assert [f.path for f in client.list_artifacts(full_run.run_id, "figures")] == [
        "figures/pathway_strengths.pdf",
        "figures/pathway_strengths.png",
    ]
    assert (
        client.get_run(resumed_run.run_id).data.metrics["ode/rel_deviation"] < 1e-4
    )  # the reference restarts from the checkpoint


@pytest.mark.parametrize("conf", ["multipath_depth4_gating", "multipath_lesion"])
def test_conf_smoke_fast_dev_run(conf):
    assert conf in available_confs()
    cfg = load_config(conf)
    exp = build(cfg)
    L.Trainer(fast_dev_run=True, callbacks=exp.callbacks, enable_progress_bar=False, enable_model_summary=False).fit(
        exp.module
    )
    assert exp.module.global_step == 1


@pytest.mark.parametrize(
    "overrides,match",
    [
        (
            {"deficit": {"pathway": "c"}},
            r"Invalid value for 'deficit.pathway': got 'c'; allowed: one of model.pathways \['a', 'b'\]",
        ),
        (
            {"deficit": {"start": 100, "end": 50}},
            r"Invalid value for 'deficit.end': got 50; allowed: a step > deficit.start=100",
        ),
        ({"deficit": {"start": 1000}}, r"Invalid value for 'deficit.start': got 1000"),
        (
            {"lesion": {"enabled": True, "mode": 8}},
            r"Invalid value for 'lesion.mode': got 8; allowed: a 0-based mode index from 0 to 7",
        ),
        ({"lesion": {"enabled": True, "end": 0}}, r"Invalid value for 'lesion.end': got 0"),
        ({"model": {"init": "xavier"}}, r"Invalid value for 'model.init': got 'xavier'; allowed: svd or gaussian"),
        ({"model": {"pathways": ["a"]}}, r"Invalid value for 'model.pathways'"),
        ({"model": {"width": 4}}, r"Invalid value for 'model.width': got 4"),
        ({"ode": {"kind": "rk4"}}, r"Invalid value for 'ode.kind': got 'rk4'; allowed: discrete or flow"),
        ({"ode": {"every_n_steps": 0}}, r"Invalid value for 'ode.every_n_steps': got 0"),
        ({"optim": {"lr": 0}}, r"Invalid value for 'optim.lr': got 0"),
        ({"deficit": {"strat": 3}}, r"Unknown config key 'deficit.strat'.*Did you mean 'deficit.start'\?"),
    ],
)
def test_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        make_config("multipath", **overrides)


def test_config_defaults_are_the_paper_settings():
    cfg = make_config("multipath")
    assert (
        cfg.model.depth,
        cfg.model.width,
        cfg.model.init,
        cfg.model.init_scale,
        cfg.optim.lr,
        cfg.train.max_steps,
    ) == (4, 100, "svd", 0.01, 0.01, 1000)
    assert (cfg.deficit.pathway, cfg.deficit.start, cfg.deficit.end) == ("b", 0, 150)
    cfg = load_config("multipath_lesion")
    assert (cfg.model.depth, cfg.deficit.end, cfg.lesion.enabled, cfg.lesion.mode, cfg.lesion.end) == (
        3,
        200,
        True,
        1,
        None,
    )


def test_discrete_reference_with_a_lesion_window_that_ends():
    """Lesion of a's mode 3 over [100, 300) while b is gated over [50, 200): still exact."""
    _, mem, ode = run(
        **{
            "model.width": 20,
            "train.max_steps": 400,
            "deficit.start": 50,
            "deficit.end": 200,
            "lesion.enabled": "true",
            "lesion.mode": 2,
            "lesion.start": 100,
            "lesion.end": 300,
            "ode.every_n_steps": 5,
        }
    )
    assert per_mode_rel_deviation(ode) < 1e-4
    assert abs(mem.strengths("a", 200)[2]) < 1e-12 and mem.strengths("a", 300)[2] > 1e-3  # lesioned, then back
    assert mem.at("lesion/a_mode2/active", 100) == 1.0 and mem.at("lesion/a_mode2/active", 300) == 0.0


def test_reference_rejects_unknown_or_per_member_events():
    from cpl.callbacks import ScheduleEvent
    from cpl.families.multipath.reference import MultiPathwayReference

    with pytest.raises(
        ValueError, match=r"Schedule event 'gate' targets pathway 'c'; the module has pathways \['a', 'b'\]"
    ):
        MultiPathwayReference.interventions([ScheduleEvent("gate", 0, 10, target="c")], ["a", "b"])
    with pytest.raises(ValueError, match=r"Per-member 'lesion' events are not supported"):
        MultiPathwayReference.interventions(
            [ScheduleEvent("lesion", 0, None, target="a", info={"mode": 1}, members=(0,))], ["a", "b"]
        )
    gates, lesions = MultiPathwayReference.interventions(
        [
            ScheduleEvent("switch", 5),
            ScheduleEvent("gate", 0, 10, target="b"),
            ScheduleEvent("lesion", 3, None, target="a", info={"mode": 1}),
        ],
        ["a", "b"],
    )
    assert (gates[0].pathway, gates[0].end, lesions[0].mode, lesions[0].start) == (1, 10, 1, 3)
    with pytest.raises(ValueError, match=r"Expected `kind` in \('discrete', 'flow'\), got 'euler'"):
        MultiPathwayReference("euler")


@pytest.mark.slow
def test_depth_table_from_runs():
    """Pathway a's final share per mode after an early deficit of b, D = 2, 3, 4, 6 (real runs, 2000 steps)."""
    lines, table = ["deficit  D   share of a for modes 1..8"], {}
    for end in (50, 150):
        for depth in (2, 3, 4, 6):
            _, mem, _ = run(
                **{"model.depth": depth, "deficit.end": end, "train.max_steps": 2000, "ode.enabled": "false"}
            )
            table[end, depth] = share_a(mem, 2000)
            lines.append(f"0-{end:<5d} {depth:<3d} " + " ".join(f"{x:.3f}" for x in table[end, depth]))
    print("\n" + "\n".join(lines))
    shares = np.stack([table[50, d] for d in (2, 3, 4, 6)])
    assert np.all(np.diff(shares, axis=0) > 0)  # a 50-step deficit: the share of a grows with depth, every mode
    assert all(np.all(table[150, d] > 0.9) for d in (2, 3, 4, 6))
