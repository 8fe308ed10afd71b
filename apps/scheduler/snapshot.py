"""Load the engine's snapshot from the database: schedulable nodes, running and pending
jobs, quotas.

A node takes new jobs while its agent is connected and ready, it is healthy enough
(not unhealthy), an operator has not cordoned or drained it, and it is not held out
for flapping. Its schedulable GPUs are those present, not unhealthy and not taken out
by an operator. Suspect nodes stay in the snapshot (their jobs still hold GPUs) but take
nothing new.
"""

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connection
from django.db.models import QuerySet

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
    """The snapshot and what applying its decisions needs from the rows it came from."""

    snapshot: Snapshot
    # Pending job id → (workspace id, pool id).
    pending: dict[int, tuple[int, int]]
    node_names: dict[int, str]


@dataclass(frozen=True)
class GpuRow:
    """What the snapshot needs of one GPU."""

    index: int
    uuid: str
    nvlink_peers: list[str]
    present: bool
    health: str


def raw_rows(queryset: QuerySet[Any, Any]) -> list[tuple[Any, ...]]:
    """The rows of a ``values_list`` queryset as the database returns them, without the
    ORM's per-value conversions (a pass reads tens of thousands of rows). JSON columns
    come back as text on some databases: decode them with ``json_value``."""
    try:
        sql, params = queryset.query.sql_with_params()
    except EmptyResultSet:  # a filter such as ``pk__in=[]`` that matches nothing
        return []
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def json_value(value: Any) -> Any:
    """A JSON column's value from ``raw_rows``: decoded already, or text to decode."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def nvlink_groups(gpus: list[GpuRow]) -> tuple[frozenset[int], ...]:
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


@dataclass(frozen=True)
class Topology:
    """What a node's agent reported when it connected: NVLink groups, cores and memory."""

    nvlink_groups: list[list[int]]
    cpus: float | None
    memory_mb: int | None


def node_capacity(facts: dict[str, Any]) -> tuple[float | None, int | None]:
    """CPU cores and memory (MB) a node offers to jobs, from the facts its agent reported."""
    cpus = facts.get("cpu_count")
    memory = facts.get("memory_total")
    return (
        float(cpus) if isinstance(cpus, int | float) and cpus > 0 else None,
        int(memory // 2**20) if isinstance(memory, int | float) and memory > 0 else None,
    )


def _topology_refresh(stale: dict[int, datetime | None]) -> dict[int, Topology]:
    """Work out the topology of nodes whose agent connected since it was last worked out,
    and keep it on the node's schedule."""
    gpus: dict[int, list[GpuRow]] = defaultdict(list)
    rows = raw_rows(
        Gpu.objects.filter(node_id__in=list(stale))
        .order_by("node_id", "index")
        .values_list("node_id", "index", "uuid", "nvlink_peers", "present", "health")
    )
    for node_id, index, uuid, peers, present, health in rows:
        gpus[node_id].append(GpuRow(index, uuid, json_value(peers) or [], bool(present), health))
    facts = dict(Node.objects.filter(pk__in=list(stale)).values_list("pk", "facts"))
    fresh = {}
    for node_id in stale:
        cpus, memory_mb = node_capacity(facts.get(node_id) or {})
        groups = [sorted(group) for group in nvlink_groups(gpus.get(node_id, []))]
        fresh[node_id] = Topology(groups, cpus, memory_mb)
    schedules = [
        NodeSchedule(
            node_id=node_id,
            nvlink_groups=fresh[node_id].nvlink_groups,
            cpus=fresh[node_id].cpus,
            memory_mb=fresh[node_id].memory_mb,
            topology_at=connected,
        )
        for node_id, connected in stale.items()
    ]
    NodeSchedule.objects.bulk_update(
        schedules, ["nvlink_groups", "cpus", "memory_mb", "topology_at"], batch_size=500
    )
    return fresh


def _nodes(now: datetime) -> tuple[list[NodeView], dict[int, str], dict[int, int]]:
    """The schedulable nodes, their names, and the workspace of each dedicated node."""
    rows = list(
        NodeSchedule.objects.filter(
            node__revoked_at__isnull=True, node__state__in=LIVE_NODE_STATES
        ).values(
            "node_id",
            "node__name",
            "node__state",
            "node__health",
            "node__connected_at",
            "node__workspace_id",
            "pool_id",
            "state",
            "held_until",
            "gpus_out",
            "nvlink_groups",
            "cpus",
            "memory_mb",
            "topology_at",
        )
    )
    stale = {
        row["node_id"]: row["node__connected_at"]
        for row in rows
        if row["node__connected_at"] != row["topology_at"]
    }
    fresh = _topology_refresh(stale) if stale else {}
    usable_by_node: dict[int, list[int]] = defaultdict(list)
    gpu_rows = raw_rows(
        Gpu.objects.filter(node_id__in=[row["node_id"] for row in rows], present=True)
        .exclude(health=Health.UNHEALTHY)
        .order_by("node_id", "index")
        .values_list("node_id", "index")
    )
    for node_id, index in gpu_rows:
        usable_by_node[node_id].append(index)
    views, names, dedicated = [], {}, {}
    for row in rows:
        node_id = row["node_id"]
        names[node_id] = row["node__name"]
        if row["node__workspace_id"] is not None:
            dedicated[node_id] = row["node__workspace_id"]
        topology = fresh.get(node_id) or Topology(
            row["nvlink_groups"] or [], row["cpus"], row["memory_mb"]
        )
        taken_out = set(row["gpus_out"] or [])
        held_until = row["held_until"]
        accepting = (
            row["node__state"] == Node.State.READY
            and row["node__health"] != Health.UNHEALTHY
            and row["state"] == NodeSchedule.State.ACTIVE
            and (held_until is None or held_until <= now)
        )
        views.append(
            NodeView(
                id=node_id,
                name=row["node__name"],
                pool_id=row["pool_id"],
                gpus=tuple(i for i in usable_by_node.get(node_id, []) if i not in taken_out),
                nvlink_groups=tuple(frozenset(group) for group in topology.nvlink_groups),
                accepting=accepting,
                cpus=topology.cpus,
                memory_mb=topology.memory_mb,
            )
        )
    return views, names, dedicated


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
            "cpus",
            "memory_mb",
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
                cpus=job.cpus or 0.0,
                memory_mb=job.memory_mb or 0,
            )
        )
    return running


def snapshot_load(now: datetime) -> Loaded:
    """Everything the engine needs, read in a handful of queries."""
    nodes, names, dedicated = _nodes(now)
    rows = raw_rows(
        Job.objects.filter(state=Job.State.PENDING).values_list(
            "pk",
            "workspace_id",
            "pool_id",
            "priority",
            "nodes",
            "gpus_per_node",
            "queue_order",
            "max_duration",
            "avoid_nodes",
            "cpus",
            "memory_mb",
        )
    )
    foreign_of: dict[int, frozenset[int]] = {}

    def foreign(workspace_id: int) -> frozenset[int]:
        """Nodes dedicated to other workspaces: a workspace's jobs never run there."""
        if workspace_id not in foreign_of:
            foreign_of[workspace_id] = frozenset(
                node for node, owner in dedicated.items() if owner != workspace_id
            )
        return foreign_of[workspace_id]

    pending, owners = [], {}
    for row in rows:
        pk, workspace_id, pool_id, priority, nodes_wanted, per_node, order, limit, avoid = row[:9]
        cpus, memory_mb = row[9:]
        owners[pk] = (workspace_id, pool_id)
        pending.append(
            PendingJob(
                id=pk,
                workspace_id=workspace_id,
                pool_id=pool_id,
                priority=PRIORITIES[priority],
                nodes=nodes_wanted,
                gpus_per_node=per_node,
                order=order,
                max_duration=limit,
                avoid_nodes=frozenset(json_value(avoid) or []) | foreign(workspace_id),
                cpus=cpus or 0.0,
                memory_mb=memory_mb or 0,
            )
        )
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
    return Loaded(snapshot=snapshot, pending=owners, node_names=names)
