"""Every bad input of the table is answered before any work, in one line naming the key (in-process)."""

from __future__ import annotations

import shutil

import pytest

from faults.bad_configs import CASES, YAML, YAML_FILES
from faults.harness import _conf_dir, run_bad_config


@pytest.fixture(scope="module")
def conf_dir():
    d = _conf_dir(YAML_FILES)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_the_table_has_at_least_120_cases():
    assert len(CASES) >= 120


@pytest.mark.parametrize("command, argv, key", CASES, ids=[f"{c} {' '.join(a)}" for c, a, _ in CASES])
def test_bad_config_is_one_line_naming_the_key(command, argv, key, conf_dir):
    if "trainer.accelerator=gpu" in argv:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    out = run_bad_config(command, argv, key, conf_dir if (command, argv, key) in YAML else None)
    assert out.ok, out.problems
