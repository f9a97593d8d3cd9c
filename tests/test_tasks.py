"""Task construction: rank, norm, observation count and overlap (docs/paper-setup.md part A)."""

import pytest
import torch

from cpl.families.matcomp.data import make_matcomp_tasks


def _idx(mask):
    return set(torch.nonzero(mask.reshape(-1)).reshape(-1).tolist())


@pytest.mark.parametrize("size, r1, r2, n_obs", [(100, 10, 5, 2000), (30, 3, 1, 200)])
def test_rank_norm_and_counts(size, r1, r2, n_obs):
    t = make_matcomp_tasks(size, r1, r2, n_obs, seed=3, dtype=torch.float64)
    for target, rank in ((t.pretrain_target, r1), (t.final_target, r2)):
        s = torch.linalg.svdvals(target)
        assert int((s > 1e-8 * s[0]).sum()) == rank
        assert torch.isclose(target.norm(), torch.tensor(float(size), dtype=torch.float64), rtol=1e-12)
    for mask in (t.pretrain_mask, t.final_mask):
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        assert int(mask.sum()) == n_obs  # distinct entries
    assert _idx(t.pretrain_mask) == _idx(t.final_mask)  # same locations by default
    assert not torch.allclose(t.pretrain_target, t.final_target)  # independent ground truths


def test_deterministic_per_seed_and_different_across_seeds():
    a = make_matcomp_tasks(20, 3, 2, 100, seed=1)
    b = make_matcomp_tasks(20, 3, 2, 100, seed=1)
    c = make_matcomp_tasks(20, 3, 2, 100, seed=2)
    assert torch.equal(a.final_target, b.final_target) and torch.equal(a.final_mask, b.final_mask)
    assert not torch.equal(a.final_target, c.final_target)


def test_streams_are_independent_of_other_settings():
    """Changing the pre-training rank leaves the final task and the observations unchanged."""
    a = make_matcomp_tasks(20, 3, 2, 100, seed=1)
    b = make_matcomp_tasks(20, 7, 2, 100, seed=1)
    assert torch.equal(a.final_target, b.final_target) and torch.equal(a.final_mask, b.final_mask)


def test_partial_information_superset():
    """Fig. 5 left: pre-train on the same task with 1000 entries, then a superset of them."""
    t = make_matcomp_tasks(100, 5, 5, 1750, seed=0, pretrain_n_obs=1000, pretrain_task="same")
    assert torch.equal(t.pretrain_target, t.final_target)
    pre, fin = _idx(t.pretrain_mask), _idx(t.final_mask)
    assert len(pre) == 1000 and len(fin) == 1750 and pre < fin
    # the first 1000 entries are the same whatever the size of the final set
    t2 = make_matcomp_tasks(100, 5, 5, 2000, seed=0, pretrain_n_obs=1000, pretrain_task="same")
    assert _idx(t2.pretrain_mask) == pre and fin < _idx(t2.final_mask)
