"""Lightning callbacks for critical-period experiments, usable in any Lightning project.

Each callback documents the small contract it needs from the LightningModule (or takes its targets
as constructor arguments) and checks it in ``setup``; each keeps its state across checkpoint
resume. They depend on :mod:`cpl.core` only (no model family, no tracking backend): metrics go
through ``trainer.loggers`` and ``trainer.callback_metrics``. ``callbacks/*.yaml`` at the top of
the repository holds one ``_target_`` node per callback; :mod:`cpl.callbacks.compose` builds them.
"""

from ..core.events import ScheduleEvent, collect_schedule
from ..core.spectrum import effective_rank, numerical_rank, singular_values
from .ode_reference import ODEReference, Reference
from .pathway_hooks import GatingDeficit, ModeLesion
from .singular_values import SingularValueLogger
from .task_switch import TaskSwitch

__all__ = [
    "GatingDeficit",
    "ModeLesion",
    "ODEReference",
    "Reference",
    "ScheduleEvent",
    "SingularValueLogger",
    "TaskSwitch",
    "collect_schedule",
    "effective_rank",
    "numerical_rank",
    "singular_values",
]
