"""Checkpoints: atomic writes, no non-finite weights, the config checked on resume, one-line errors."""

from __future__ import annotations

import errno
import math

import pytest
import torch

from cpl.core import checkpoint as ck


def _ckpt(value: float) -> dict:
    return {"state_dict": {"w": torch.full((3, 3), value)}, "global_step": 7}


def test_atomic_save_keeps_the_old_file_whole_when_a_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    ck.atomic_save(_ckpt(1.0), path)

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck.torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        ck.atomic_save(_ckpt(2.0), path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left
    assert torch.equal(ck.load(path)["state_dict"]["w"], torch.ones(3, 3))


def test_non_finite_weights_are_not_written(tmp_path):
    io = ck.SafeCheckpointIO({"config_hash": "h", "config": {}})
    io.save_checkpoint(_ckpt(1.0), tmp_path / "last.ckpt")
    with pytest.warns(UserWarning, match="not finite"):
        io.save_checkpoint(_ckpt(math.nan), tmp_path / "last.ckpt")
    assert io.refused == [str(tmp_path / "last.ckpt")]
    saved = ck.load(tmp_path / "last.ckpt")
    assert saved["cpl"]["config_hash"] == "h" and torch.isfinite(saved["state_dict"]["w"]).all()


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"garbage" * 5, lambda b: b""])
def test_a_damaged_checkpoint_is_one_line_naming_it(tmp_path, damage):
    path = tmp_path / "last.ckpt"
    ck.atomic_save(_ckpt(1.0), path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ck.CheckpointError, match=r"Checkpoint '.*last.ckpt' is truncated or corrupt") as info:
        ck.load(path)
    assert "\n" not in str(info.value)


def test_resume_with_another_config_names_the_keys_unless_forced(tmp_path):
    path = tmp_path / "last.ckpt"
    old = {"model.depth": 3, "optim.lr": 0.5, "seed": 0}
    ck.SafeCheckpointIO({"config_hash": "a", "config": old}).save_checkpoint(_ckpt(1.0), path)
    ck.check_resume(path, old, "a")  # the same config
    new = {**old, "model.depth": 4, "optim.lr": 0.1}
    with pytest.raises(ck.CheckpointError, match=r"model.depth: 3 -> 4, optim.lr: 0.5 -> 0.1\); resume with"):
        ck.check_resume(path, new, "b")
    assert ck.check_resume(path, new, "b", force=True)["global_step"] == 7
