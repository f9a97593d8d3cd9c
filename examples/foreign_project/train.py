"""Train the teacher-student MLP with all five cpl callbacks, configured from the repository's
``callbacks/*.yaml`` files plus this project's ``callbacks.yaml``.

    python train.py [OUT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import yaml
from lightning.pytorch.loggers import CSVLogger
from teacher_student import MLP, TeacherStudentData

from cpl.callbacks.compose import load_callbacks

NAMES = ("singular_values", "task_switch", "gating_deficit", "mode_lesion", "ode_reference")
HERE = Path(__file__).resolve().parent


def make_callbacks(**changes: dict[str, Any]) -> list[L.Callback]:
    """The five callbacks: repository defaults, this project's arguments, then ``changes`` (per file name)."""
    overrides = yaml.safe_load((HERE / "callbacks.yaml").read_text())
    for name, args in changes.items():
        overrides[name] = {**overrides.get(name, {}), **args}
    return load_callbacks(NAMES, overrides=overrides)


def make_trainer(out_dir: Path, callbacks: Sequence[L.Callback], **trainer_args: Any) -> L.Trainer:
    args = dict(max_epochs=6, log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False)
    args.update(trainer_args)
    return L.Trainer(logger=CSVLogger(out_dir, name="csv"), callbacks=list(callbacks), default_root_dir=out_dir, **args)


def main(out_dir: str | Path = "outputs") -> L.Trainer:
    L.seed_everything(0)
    trainer = make_trainer(Path(out_dir), make_callbacks())
    trainer.fit(MLP(), datamodule=TeacherStudentData())
    return trainer


if __name__ == "__main__":
    main(*sys.argv[1:])
