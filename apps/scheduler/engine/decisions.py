"""What the engine decides in one pass: jobs to start, jobs to stop, and why the rest wait."""

from dataclasses import dataclass

from apps.scheduler.engine.snapshot import Slots


@dataclass(frozen=True)
class Placement:
    """Start a pending job: rank ``r`` runs on ``slots[r]`` (node id, GPU indices)."""

    job_id: int
    slots: Slots
    borrowed: bool


@dataclass(frozen=True)
class Preemption:
    """Stop a running job (SIGTERM, grace, requeue) to make room for a pending one."""

    job_id: int
    for_job_id: int
    reason: str


@dataclass(frozen=True)
class PendingReason:
    """Why a pending job did not start in this pass, and when it may.

    ``position`` is 1-based among the jobs of its pool that stay pending, in the engine's
    order. The job holding the pool's reservation has ``reserved=True``; ``reserved_slots``
    then lists, by rank, the GPUs it will start on (idle ones are held back from backfill,
    busy ones are held by jobs expected to end by ``estimated_start``).
    """

    job_id: int
    position: int
    reason: str
    estimated_start: float | None
    reserved: bool = False
    reserved_slots: Slots = ()


@dataclass(frozen=True)
class Decisions:
    """The outcome of a pass. ``pending`` covers every pending job not placed."""

    placements: tuple[Placement, ...]
    preemptions: tuple[Preemption, ...]
    pending: tuple[PendingReason, ...]
