"""Batched members and the shared trunk equal separate runs (issue 6's equivalence tests)."""

import numpy as np
import pytest
import torch

from conftest import small_matcomp
from cpl.callbacks import SingularValueLogger, TaskSwitch
from cpl.core.members import onset_chain, trunk_owner
from cpl.families.matcomp.experiment import build_module
from cpl.tracking.dense import TRUNK_RUN_TAG, TRUNK_UNTIL_TAG, full_metric, full_series, load_dense
from test_matcomp_module import RecordW, fit


def _separate(tmp_path, onset, after, steps_total=None):
    cfg = small_matcomp(
        tmp_path, switch={"at_step": onset}, train={"steps_after_switch": after}, trainer={"dtype": "float64"}
    )
    module = build_module([cfg])
    rec = RecordW()
    fit(module, [TaskSwitch(onset), rec], steps=onset + after)
    return rec


def test_shared_trunk_equals_separate_runs(tmp_path, list_logger):
    onsets, after = [0, 7, 20, 45], [30, 30, 12, 30]
    sched = onset_chain(onsets, after)
    cfgs = [
        small_matcomp(tmp_path, switch={"at_step": t}, train={"steps_after_switch": a}, trainer={"dtype": "float64"})
        for t, a in zip(onsets, after)
    ]
    module = build_module(cfgs)
    module.set_member_schedule(sched.starts, sched.ends, sched.sources)
    rec = RecordW()
    svl = SingularValueLogger(every_n_steps=5, top_k=3)
    fit(module, [TaskSwitch(sched.switch_steps), svl, rec], logger=list_logger, steps=max(sched.ends))
    for e, (t, a) in enumerate(zip(onsets, after)):
        ref = _separate(tmp_path, t, a)
        end = t + a
        np.testing.assert_allclose(
            rec.ws[max(sched.ends)][e], ref.ws[end][0], rtol=1e-10, atol=1e-13
        )  # frozen after its end
        for step in range(sched.starts[e], end + 1, 3):
            np.testing.assert_allclose(rec.ws[step][e], ref.ws[step][0], rtol=1e-10, atol=1e-13)
        # metrics are logged inside each member's window and at its own end step
        logged = list_logger.series(f"member{e}/test/final_error")
        assert max(logged) == end and min(logged) == -(-sched.starts[e] // 10) * 10
        s = np.linalg.svd(ref.ws[end][0], compute_uv=False)
        assert list_logger.series(f"member{e}/sv/1")[end] == pytest.approx(s[0], rel=1e-6)
    # member 2 (onset 20) ends at 32, member 3 at 75: at step 40 only member 3 is logged
    assert 40 not in list_logger.series("member2/test/final_error") and 40 in list_logger.series(
        "member3/test/final_error"
    )


def test_schedule_errors(tmp_path):
    module = build_module([small_matcomp(tmp_path, seed=s) for s in range(2)])
    with pytest.raises(ValueError, match=r"Expected one start, end and source per member \(2\), got 1, 1, 1"):
        module.set_member_schedule([0], [5], [None])
    with pytest.raises(ValueError, match=r"Member 1 starts at step 10 from member 0, which is not active then"):
        module.set_member_schedule([0, 10], [5, 20], [None, 0])
    with pytest.raises(ValueError, match=r"Expected strictly increasing `onsets`, got \[5, 5\]"):
        onset_chain([5, 5], 3)


def test_trunk_owner():
    s = onset_chain([3, 8, 20], 4)
    assert [trunk_owner(s, 2, t) for t in (0, 3, 7, 8, 30)] == [0, 1, 1, 2, 2]


def test_train_group_records_each_cell_like_a_separate_run(tmp_path):
    """One batched run (an onset chain plus an independent seed) = separate runs, in MLflow too."""
    from mlflow.tracking import MlflowClient

    from cpl.batching import plan_groups
    from cpl.run import train, train_group

    def cell(onset, seed=0, store="group"):
        return small_matcomp(
            tmp_path,
            seed=seed,
            switch={"at_step": onset},
            train={"steps_after_switch": 25},
            tracking={"uri": f"sqlite:///{tmp_path}/{store}.db"},
            trainer={"dtype": "float64"},
        )

    cells = [cell(20), cell(0), cell(7), cell(7, seed=1)]
    assert plan_groups(cells) == [[0, 1, 2, 3]]
    results = train_group(cells)
    client = MlflowClient(f"sqlite:///{tmp_path}/group.db")
    for c, res in zip(cells, results):
        sep_cfg = cell(c.switch.at_step, c.seed, store="separate")
        sep = train(sep_cfg)
        sep_client = MlflowClient(f"sqlite:///{tmp_path}/separate.db")
        assert res.metrics["test/final_error"] == pytest.approx(sep.metrics["test/final_error"], rel=1e-9)
        assert res.metrics["sv/effective_rank"] == pytest.approx(sep.metrics["sv/effective_rank"], rel=1e-9)
        run = client.get_run(res.run_id)
        assert run.info.status == "FINISHED" and run.data.params["switch.at_step"] == str(c.switch.at_step)
        for key in ("test/final_error", "sv/1", "train/loss", "task/switched"):
            got = full_metric(client, res.run_id, key)  # its own steps, then its trunk's through the pointer
            want = {m.step: m.value for m in sep_client.get_metric_history(sep.run_id, key)}
            assert sorted(got) == sorted(want), key  # the same steps: trunk history included
            for step in want:
                assert got[step] == pytest.approx(want[step], rel=1e-8, abs=1e-12), (key, step)
        tags = run.data.tags
        if c.switch.at_step == 20:  # starts at step 7 on the trunk (onsets 0, 7, 20): records only its own steps
            start = int(tags[TRUNK_UNTIL_TAG])
            assert start > 0 and tags[TRUNK_RUN_TAG] in {r.run_id for r in results}
            first = min(m.step for m in client.get_metric_history(res.run_id, "train/loss"))
            assert start <= first < start + c.log.every_n_steps  # its first log point after its start
        else:
            assert TRUNK_RUN_TAG not in tags
        assert {a.path for a in client.list_artifacts(res.run_id, "figures")} == {
            "figures/singular_values.png",
            "figures/singular_values.pdf",
        }
        # the full-resolution readouts (the figure's data): own part + the trunk's = a separate run's
        got_steps, got = full_series(client, res.run_id, "singular_values")
        want_steps, want = load_dense(sep_client, sep.run_id)["singular_values"]
        assert got_steps.tolist() == want_steps.tolist() and got_steps[0] == 0, c.switch.at_step
        np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-12)


def test_test_error_trace_of_trunk_members(tmp_path):
    """The dense test-error trace of every member equals a separate run's per-step test error."""
    onsets = [0, 6, 15]
    sched = onset_chain(onsets, 20)
    cfgs = [
        small_matcomp(
            tmp_path,
            switch={"at_step": t},
            train={"steps_after_switch": 20},
            trainer={"dtype": "float64"},
            log={"trace_every_n_steps": 1},
        )
        for t in onsets
    ]
    module = build_module(cfgs)
    module.set_member_schedule(sched.starts, sched.ends, sched.sources)
    fit(module, [TaskSwitch(sched.switch_steps)], steps=max(sched.ends))
    fin = module.targets[1, 0].numpy()
    for e, t in enumerate(onsets):
        ref = _separate(tmp_path, t, 20)
        steps, values = module.test_error_trace(e, sched)
        assert steps == list(range(t + 20))  # weights before each of the member's steps
        np.testing.assert_allclose(values, [((ref.ws[s][0] - fin) ** 2).mean() for s in steps], rtol=1e-10)


@pytest.mark.parametrize("steps_per_call", [5, 10, "auto"])
def test_several_steps_per_lightning_step_change_nothing(tmp_path, list_logger, steps_per_call):
    """Chunked gradient steps give the same weights and the same logged metrics at the same steps."""
    from conftest import ListLogger

    onsets, after = [0, 13, 33], 25
    sched = onset_chain(onsets, after)

    def run(k, logger):
        cfgs = [
            small_matcomp(
                tmp_path, switch={"at_step": t}, train={"steps_after_switch": after}, trainer={"dtype": "float64"}
            )
            for t in onsets
        ]
        module = build_module(cfgs)
        module.set_member_schedule(sched.starts, sched.ends, sched.sources)
        if k != 1:
            module.set_steps_per_call(k)
        rec = RecordW()
        trainer = fit(
            module,
            [TaskSwitch(sched.switch_steps), SingularValueLogger(every_n_steps=5, top_k=3), rec],
            logger=logger,
            steps=max(sched.ends),
        )
        return module, rec, trainer

    ref_logger = ListLogger()
    m1, r1, _ = run(1, ref_logger)
    mk, rk, trainer = run(steps_per_call, list_logger)
    assert trainer.global_step == max(sched.ends)
    assert trainer.num_training_batches == len(rk.ws) - 1  # one batch per chunk (the progress bar's total)
    for a, b in zip(m1.model.factors, mk.model.factors):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert len(rk.ws) < len(r1.ws) / 3  # far fewer Lightning steps were taken...
    for key in ("member0/test/final_error", "member2/sv/1", "member1/task/switched", "member2/train/loss"):
        assert ref_logger.series(key) == list_logger.series(key), key  # ...but every logged step is the same
