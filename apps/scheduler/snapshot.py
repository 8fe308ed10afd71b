"""Load the engine's snapshot from the database: schedulable nodes, running and pending
jobs, quotas.

A node takes new jobs while its agent is connected and ready, it is healthy enough
(not unhealthy), an operator has not cordoned or drained it, and it is not held out
for flapping. Its schedulable GPUs are those present, not unhealthy and not taken out
by an operator. Suspect nodes stay in the snapshot (their jobs still hold GPUs) but take
nothing new.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from apps.monitoring.models import Gpu, Health, Node
from apps.scheduler.engine import (
    PRIORITIES,
    NodeView,
    PendingJob,
    RunningJob,
    Snapshot,
)
from apps.scheduler.engine import (
    Quota as QuotaView,
)
from apps.scheduler.lifecycle import HOLDING_STATES, RUNNING_STATES
from apps.scheduler.models import Allocation, Job, NodeSchedule, Pool, Quota

# Node states whose GPUs the snapshot counts.
LIVE_NODE_STATES = (Node.State.READY, Node.State.SUSPECT)


@dataclass
class Loaded:
    """The snapshot and the rows it came from, for applying the decisions."""

    snapshot: Snapshot
    pending: dict[int, Job]
    node_names: dict[int, str]


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def nvlink_groups(gpus: list[Gpu]) -> tuple[frozenset[int], ...]:
    """GPU indices joined by NVLink, as connected groups (none when no peers are known)."""
    by_uuid = {g.uuid: g.index for g in gpus if g.uuid}
    parent = {g.index: g.index for g in gpus}

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    linked = False
    for gpu in gpus:
        for peer in gpu.nvlink_peers or []:
            if peer in by_uuid:
                linked = True
                parent[root(gpu.index)] = root(by_uuid[peer])
    if not linked:
        return ()
    groups: dict[int, set[int]] = defaultdict(set)
    for gpu in gpus:
        groups[root(gpu.index)].add(gpu.index)
    return tuple(frozenset(g) for g in sorted(groups.values(), key=min) if len(g) > 1)


def default_pool() -> Pool:
    """The pool new nodes join, created on first use."""
    pool = Pool.objects.filter(is_default=True).first()
    if pool is None:
        pool, _ = Pool.objects.get_or_create(
            name="default", defaults={"is_default": True, "description": "Every new node"}
        )
    return pool


def schedules_ensure() -> int:
    """Give every live node without one a schedule in the default pool; how many were new."""
    missing = list(
        Node.objects.filter(schedule__isnull=True, revoked_at__isnull=True).values_list(
            "pk", flat=True
        )
    )
    if not missing:
        return 0
    pool = default_pool()
    NodeSchedule.objects.bulk_create(
        [NodeSchedule(node_id=node_id, pool=pool) for node_id in missing], ignore_conflicts=True
    )
    return len(missing)


def _nodes(now: datetime) -> tuple[list[NodeView], dict[int, str]]:
    schedules = {
        s.node_id: s
        for s in NodeSchedule.objects.filter(
            node__revoked_at__isnull=True, node__state__in=LIVE_NODE_STATES
        ).select_related("node")
    }
    gpus_by_node: dict[int, list[Gpu]] = defaultdict(list)
    for gpu in Gpu.objects.filter(node_id__in=schedules).order_by("node_id", "index"):
        gpus_by_node[gpu.node_id].append(gpu)
    views, names = [], {}
    for node_id, schedule in schedules.items():
        node = schedule.node
        names[node_id] = node.name
        out = set(schedule.gpus_out or [])
        gpus = gpus_by_node.get(node_id, [])
        usable = tuple(
            g.index
            for g in gpus
            if g.present and g.health != Health.UNHEALTHY and g.index not in out
        )
        accepting = (
            node.state == Node.State.READY
            and node.health != Health.UNHEALTHY
            and schedule.state == NodeSchedule.State.ACTIVE
            and (schedule.held_until is None or schedule.held_until <= now)
        )
        views.append(
            NodeView(
                id=node_id,
                name=node.name,
                pool_id=schedule.pool_id,
                gpus=usable,
                nvlink_groups=nvlink_groups(gpus),
                accepting=accepting,
            )
        )
    return views, names


def _running() -> list[RunningJob]:
    jobs = {
        j.pk: j
        for j in Job.objects.filter(state__in=HOLDING_STATES).only(
            "pk",
            "workspace_id",
            "pool_id",
            "priority",
            "state",
            "attempt",
            "started_at",
            "scheduled_at",
            "last_checkpoint_at",
            "max_duration",
        )
    }
    slots: dict[int, list[tuple[int, int, tuple[int, ...]]]] = defaultdict(list)
    allocations = Allocation.objects.filter(
        job_id__in=jobs, state__in=[Allocation.State.STARTING, Allocation.State.RUNNING]
    ).values_list("job_id", "attempt", "rank", "node_id", "gpus")
    for job_id, attempt, rank, node_id, gpus in allocations:
        if attempt == jobs[job_id].attempt:
            slots[job_id].append((rank, node_id, tuple(gpus)))
    running = []
    for job_id, job in jobs.items():
        if not slots.get(job_id):
            continue
        started = job.started_at or job.scheduled_at
        started_at = _epoch(started) or 0.0
        running.append(
            RunningJob(
                id=job_id,
                workspace_id=job.workspace_id,
                pool_id=job.pool_id,
                priority=PRIORITIES[job.priority],
                slots=tuple((node, gpus) for _, node, gpus in sorted(slots[job_id])),
                started_at=started_at,
                last_checkpoint_at=_epoch(job.last_checkpoint_at),
                ends_by=started_at + job.max_duration if job.max_duration else None,
                preemptible=job.state in RUNNING_STATES,
            )
        )
    return running


def snapshot_load(now: datetime) -> Loaded:
    """Everything the engine needs, read in a handful of queries."""
    nodes, names = _nodes(now)
    pending_jobs = {
        j.pk: j
        for j in Job.objects.filter(state=Job.State.PENDING).select_related("workspace", "pool")
    }
    pending = [
        PendingJob(
            id=job.pk,
            workspace_id=job.workspace_id,
            pool_id=job.pool_id,
            priority=PRIORITIES[job.priority],
            nodes=job.nodes,
            gpus_per_node=job.gpus_per_node,
            order=job.queue_order,
            max_duration=job.max_duration,
            avoid_nodes=frozenset(job.avoid_nodes or []),
        )
        for job in pending_jobs.values()
    ]
    quotas = [
        QuotaView(
            workspace_id=q.workspace_id,
            pool_id=q.pool_id,
            guaranteed=q.guaranteed,
            maximum=q.maximum,
            weight=q.weight,
        )
        for q in Quota.objects.all()
    ]
    snapshot = Snapshot(
        now=now.timestamp(),
        nodes=tuple(nodes),
        running=tuple(_running()),
        pending=tuple(pending),
        quotas=tuple(quotas),
    )
    return Loaded(snapshot=snapshot, pending=pending_jobs, node_names=names)
