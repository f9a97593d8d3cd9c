"""``trainer.steps_per_call: auto`` (the default): chunks of gradient steps between host
synchronisations end on every event, and runs are identical to one step per Lightning step."""

from __future__ import annotations

import random

import lightning as L
import pytest

from cpl import train
from cpl.config import load_config
from cpl.core.events import ChunkPlan
from cpl.tracking import get_client

pytestmark = pytest.mark.usefixtures("one_thread")


def test_chunk_plan_boundaries_fall_on_every_interval_multiple_and_event():
    rng = random.Random(0)
    for _ in range(200):
        intervals = rng.sample([3, 5, 10, 25, 100, 7], rng.randint(1, 3))
        events = rng.sample(range(1, 400), rng.randint(0, 6))
        cap = rng.choice([None, 4, 10])
        start, end = rng.randint(0, 50), rng.randint(60, 400)
        ends = ChunkPlan.build(cap, intervals, events).boundaries(start, end)
        due = {s for s in range(start + 1, end + 1) if any(s % i == 0 for i in intervals)}
        due |= {e for e in events if start < e <= end} | {end}
        assert due <= set(ends), sorted(due - set(ends))
        lengths = [b - a for a, b in zip([start, *ends], ends)]
        assert min(lengths) >= 1 and (cap is None or max(lengths) <= cap)
        if cap is None:  # auto: nothing else stops a chunk
            assert set(ends) == due


class ChunkEnds(L.Callback):
    """The global step at the end of every Lightning training step (a chunk's end)."""

    def __init__(self):
        self.ends: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.ends.append(trainer.global_step)


def _metrics(uri: str, run_id: str) -> dict[str, list[tuple[int, float]]]:
    client = get_client(uri)
    keys = client.get_run(run_id).data.metrics
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys}


def _run(tmp_path, conf: str, spc, overrides: list[str]):
    cfg = load_config(
        conf,
        [
            f"trainer.steps_per_call={spc}",
            "trainer.dtype=float64",
            "trainer.progress_bar=false",
            "log.figures=false",
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
            f"trainer.checkpoint_dir={tmp_path}/ckpt-{spc}",
            *overrides,
        ],
    )
    ends = ChunkEnds()
    return cfg, train(cfg, callbacks=[ends]), ends.ends


@pytest.mark.parametrize(
    "conf, overrides, events",
    [
        (
            "matcomp_rank10to5",
            [
                "task.size=20",
                "task.n_obs=150",
                "task.pretrain_rank=4",
                "task.final_rank=2",
                "optim.lr=0.5",
                "model.init_scale=0.1",
                "switch.at_step=37",
                "train.steps_after_switch=53",
                "log.every_n_steps=20",
                "log.sv_every_n_steps=10",
                "log.sv_log_every_n_steps=20",
                "trainer.checkpoint_every_n_steps=45",
            ],
            lambda cfg: [37],
        ),
        (
            "multipath_depth4_gating",
            [
                "train.max_steps=90",
                "deficit.start=7",
                "deficit.end=23",
                "log.every_n_steps=20",
                "log.sv_every_n_steps=10",
                "trainer.checkpoint_every_n_steps=45",
            ],
            lambda cfg: [7, 23],
        ),
    ],
)
def test_auto_chunks_end_on_every_event_and_change_nothing(tmp_path, conf, overrides, events):
    """Both families: auto takes several steps per call, stops at every log point, readout,
    checkpoint, switch/deficit boundary and the last step, and logs the same values at the same
    steps as one step per call, with the same final weights."""
    cfg, one, ends_one = _run(tmp_path, conf, 1, overrides)
    cfg, auto, ends_auto = _run(tmp_path, conf, "auto", overrides)
    total = ends_one[-1]
    assert ends_one == list(range(1, total + 1)) and ends_auto[-1] == total
    due = {s for s in range(1, total + 1) if s % 10 == 0 or s % 45 == 0} | set(events(cfg)) | {total}
    assert set(ends_auto) == due  # every event is a chunk end, and nothing else is
    assert len(ends_auto) < total / 4
    m_one, m_auto = _metrics(one.tracking_uri, one.run_id), _metrics(auto.tracking_uri, auto.run_id)
    assert m_one.keys() == m_auto.keys() and len(m_one) > 3
    for key in m_one:
        assert m_one[key] == m_auto[key], key
    assert one.metrics == auto.metrics


def test_auto_is_the_default_and_bad_values_are_refused():
    from cpl.config import ConfigError

    assert load_config("matcomp_depth_sweep").trainer.steps_per_call == "auto"
    with pytest.raises(ConfigError, match=r"trainer.steps_per_call.*auto or an integer >= 1"):
        load_config("matcomp_rank10to5", ["trainer.steps_per_call=fast"])
    with pytest.raises(ConfigError, match=r"trainer.steps_per_call"):
        load_config("matcomp_rank10to5", ["trainer.steps_per_call=0"])
