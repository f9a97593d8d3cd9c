"""fast_dev_run smoke test of every conf file: each builds and takes a step.

This proves only that the code runs; logging, intervals, MLflow contents and resume are
tested with real short runs elsewhere.
"""

import lightning as L
import pytest

from cpl.config import available_confs, load_config
from cpl.run import build


@pytest.mark.parametrize("name", available_confs())
def test_conf_fast_dev_run(name):
    cfg = load_config(name)
    exp = build(cfg)
    trainer = L.Trainer(
        fast_dev_run=True,
        callbacks=exp.callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(exp.module)
    assert trainer.global_step == 1
