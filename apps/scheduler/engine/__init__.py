"""The scheduling engine: a pure function from a snapshot of the cluster to decisions.

No Django, no database, no clock: the Django side builds a ``Snapshot``, calls ``schedule``
and applies the returned ``Decisions``.
"""

from apps.scheduler.engine.core import schedule
from apps.scheduler.engine.decisions import Decisions, PendingReason, Placement, Preemption
from apps.scheduler.engine.snapshot import (
    PRIORITIES,
    NodeView,
    PendingJob,
    Quota,
    RunningJob,
    Snapshot,
)

__all__ = [
    "PRIORITIES",
    "Decisions",
    "NodeView",
    "PendingJob",
    "PendingReason",
    "Placement",
    "Preemption",
    "Quota",
    "RunningJob",
    "Snapshot",
    "schedule",
]
