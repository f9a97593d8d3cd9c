"""The family-agnostic core: members and their schedules, schedule events and chunks of steps,
functional spectrum readouts, seeded random streams, the full-batch LightningModule base class,
and (in :mod:`cpl.core.lightning_compat`) every touch of Lightning internals.

Nothing here knows a model family, a config or a tracking backend. Import the submodules directly.
"""
