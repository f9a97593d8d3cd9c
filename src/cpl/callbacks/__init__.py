"""Lightning callbacks for critical-period experiments, usable in any Lightning project.

Each callback documents the small contract it needs from the LightningModule and checks it in
``setup``; each keeps its state across checkpoint resume.
"""

from .ode_reference import ODEReference, Reference, ScheduleEvent, collect_schedule
from .pathway_hooks import GatingDeficit, ModeLesion
from .singular_values import SingularValueLogger, effective_rank, numerical_rank
from .task_switch import TaskSwitch

__all__ = ["GatingDeficit", "ModeLesion", "ODEReference", "Reference", "ScheduleEvent", "SingularValueLogger", "TaskSwitch", "collect_schedule", "effective_rank", "numerical_rank"]
