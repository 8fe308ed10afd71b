"""The pool's reservation: where the first job that cannot start will start soonest.

Each candidate node is scored by the time enough of its GPUs, CPU cores and memory are idle
for the job: open ones now, then those of jobs already leaving (now), then those of running
jobs at their ``ends_by`` (unknown ends last, with no time). What was placed in this pass and
what is claimed by jobs waiting for preemptions is never counted. The best nodes' GPUs are
held: idle ones are closed to backfill (except jobs sure to end before the estimated start),
busy ones to other jobs' preemption plans; so are the cores and memory the job counts on.
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


def _node_start(
    node: NodeState, job: PendingJob, now: float
) -> tuple[float, tuple[int, ...]] | None:
    """When a rank of ``job`` fits on ``node``, and on which GPUs; None if it never can."""
    count = job.gpus_per_node
    releases: list[tuple[float, int, list[int], float, float]] = []
    for holder, held in node.holders:
        cores, mb = holder.cpus, holder.memory
        if holder.leaving:
            when, cores, mb = now, 0.0, 0.0
        elif holder.job.ends_by is not None:
            when = max(now, holder.job.ends_by)
        else:
            when = math.inf
        freed = [gpu for gpu in held if gpu not in node.claimed]
        if freed or cores or mb:
            releases.append((when, holder.job.id, freed, cores, mb))
    releases.sort()
    chosen = sorted(node.open)
    gpus = choose_gpus(node.open, count, node.groups) if len(chosen) >= count else None
    cpu, memory = node.cpu, node.memory
    cores, mb = cpu.open + cpu.leaving, memory.open + memory.leaving
    cores_owed, mb_owed = cpu.owed, memory.owed
    if gpus is not None and cores >= job.cpus and mb >= job.memory_mb:
        return now, gpus
    for when, _, freed, held_cores, held_mb in releases:
        if gpus is None:
            chosen.extend(sorted(freed)[: count - len(chosen)])
            if len(chosen) == count:
                gpus = tuple(sorted(chosen))
        paid = min(held_cores, cores_owed)
        cores_owed -= paid
        cores += held_cores - paid
        paid = min(held_mb, mb_owed)
        mb_owed -= paid
        mb += held_mb - paid
        if gpus is not None and cores >= job.cpus and mb >= job.memory_mb:
            return when, gpus
    return None


def plan_reservation(pool: PoolState, job: PendingJob, now: float) -> Reservation | None:
    """Hold GPUs for ``job`` where it starts soonest; None if too few nodes could ever take it."""
    count = job.gpus_per_node
    scored: list[tuple[float, int, int, tuple[int, ...]]] = []
    for node in pool.nodes:
        if (
            not node.accepting
            or node.size < count
            or node.cpu.size < job.cpus
            or node.memory.size < job.memory_mb
            or node.id in job.avoid_nodes
        ):
            continue
        start = _node_start(node, job, now)
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
        pool.reserve(node, gpus, job.cpus, job.memory_mb)
        slots.append((node.id, gpus))
    latest = max(item[0] for item in best)
    return Reservation(
        job_id=job.id,
        slots=tuple(slots),
        idle=idle,
        start=None if math.isinf(latest) else latest,
        names=tuple(pool.nodes[item[2]].name for item in best),
    )
