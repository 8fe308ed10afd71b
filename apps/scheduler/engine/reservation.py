"""The pool's reservation: where the first job that cannot start will start soonest.

Each candidate node is scored by the time enough of its GPUs are idle for the job: open
GPUs now, then the GPUs of jobs already leaving (now), then those of running jobs at their
``ends_by`` (unknown ends last, with no time). GPUs placed in this pass and GPUs claimed by
jobs waiting for preemptions are never counted. The best nodes' GPUs are held: idle ones
are closed to backfill (except jobs sure to end before the estimated start), busy ones to
other jobs' preemption plans.
"""

import math
from dataclasses import dataclass

from apps.scheduler.engine.placement import choose_gpus
from apps.scheduler.engine.pool import NodeState, PoolState
from apps.scheduler.engine.snapshot import PendingJob, Slots


@dataclass(frozen=True)
class Reservation:
    """GPUs held for ``job_id``, which should start at ``start`` (None: not computable)."""

    job_id: int
    slots: Slots
    idle: dict[int, frozenset[int]]
    start: float | None
    names: tuple[str, ...]


def _node_start(node: NodeState, count: int, now: float) -> tuple[float, tuple[int, ...]] | None:
    """When ``count`` GPUs of ``node`` are idle, and which; None if they never can be."""
    if len(node.open) >= count:
        return now, choose_gpus(node.open, count, node.groups)
    releases: list[tuple[float, int, list[int]]] = []
    for holder, gpus in node.holders:
        if holder.leaving:
            when = now
        elif holder.job.ends_by is not None:
            when = max(now, holder.job.ends_by)
        else:
            when = math.inf
        freed = [gpu for gpu in gpus if gpu not in node.claimed]
        if freed:
            releases.append((when, holder.job.id, freed))
    releases.sort()
    chosen = sorted(node.open)
    for when, _, freed in releases:
        chosen.extend(sorted(freed)[: count - len(chosen)])
        if len(chosen) == count:
            return when, tuple(sorted(chosen))
    return None


def plan_reservation(pool: PoolState, job: PendingJob, now: float) -> Reservation | None:
    """Hold GPUs for ``job`` where it starts soonest; None if too few nodes could ever take it."""
    count = job.gpus_per_node
    scored: list[tuple[float, int, int, tuple[int, ...]]] = []
    for node in pool.nodes:
        if not node.accepting or node.size < count or node.id in job.avoid_nodes:
            continue
        start = _node_start(node, count, now)
        if start is not None:
            scored.append((start[0], count - len(node.open), node.rank, start[1]))
    if len(scored) < job.nodes:
        return None
    scored.sort(key=lambda item: item[:3])
    best = sorted(scored[: job.nodes], key=lambda item: item[2])
    slots: list[tuple[int, tuple[int, ...]]] = []
    idle: dict[int, frozenset[int]] = {}
    for _, _, rank, gpus in best:
        node = pool.nodes[rank]
        idle_here = frozenset(gpu for gpu in gpus if gpu in node.open)
        if idle_here:
            idle[rank] = idle_here
        pool.reserve(node, gpus)
        slots.append((node.id, gpus))
    latest = max(item[0] for item in best)
    return Reservation(
        job_id=job.id,
        slots=tuple(slots),
        idle=idle,
        start=None if math.isinf(latest) else latest,
        names=tuple(pool.nodes[item[2]].name for item in best),
    )
