"""Runtime faults as subprocesses (tiny runs on a fresh store each): exit code, every run's final
status, none RUNNING, rows in store + spill == rows produced, one-line messages. A few run by
default; the whole table runs in ``scripts/faults.py`` (CI) and here under ``-m slow``."""

from __future__ import annotations

import pytest

from faults.runtime import FAULTS

QUICK = [f for f in FAULTS if f.quick]
SLOW = [f for f in FAULTS if not f.quick]


def test_the_table_has_at_least_30_faults():
    assert len(FAULTS) >= 30


@pytest.mark.parametrize("fault", QUICK, ids=[f.name for f in QUICK])
def test_runtime_fault(fault, tmp_path):
    out = fault.run(tmp_path)
    assert out.ok, out.problems


@pytest.mark.slow
@pytest.mark.parametrize("fault", SLOW, ids=[f.name for f in SLOW])
def test_runtime_fault_slow(fault, tmp_path):
    out = fault.run(tmp_path)
    assert out.ok, out.problems
