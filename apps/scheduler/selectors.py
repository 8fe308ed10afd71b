"""Reads, always starting from what the requesting user may see.

Jobs belong to workspaces: members of any role and platform admins see them; anyone else
gets "not found". Pools and their capacity are cluster facts every signed-in user sees;
per-workspace usage names only the user's own workspaces (platform admins see all),
the rest is summed as "other workspaces".
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db.models import Count, Q, QuerySet

from apps.accounts.models import User, Workspace
from apps.accounts.selectors import ACTING_ROLES, membership_role, workspace_ids_member
from apps.monitoring.models import Gpu, Health, Node
from apps.scheduler.broadcast import QUEUE_KEY, queue_entry
from apps.scheduler.lifecycle import HOLDING_STATES
from apps.scheduler.models import Allocation, Job, JobEvent, NodeSchedule, Pool, Quota
from apps.system.errors import NotFoundError
from apps.system.heartbeats import redis_client


def job_visible(*, user: User) -> QuerySet[Job]:
    """Every job ``user`` may see."""
    jobs = Job.objects.select_related("workspace", "pool", "submitted_by")
    if user.is_platform_admin:
        return jobs
    return jobs.filter(workspace_id__in=workspace_ids_member(user=user))


def job_get(*, user: User, job_id: int) -> Job:
    """One job ``user`` may see, else NotFoundError."""
    try:
        return job_visible(user=user).get(pk=job_id)
    except Job.DoesNotExist:
        raise NotFoundError("Job not found.", field="job_id") from None


@dataclass(frozen=True)
class JobFilter:
    """Filters of the job list; empty values do not filter."""

    workspace_id: int | None = None
    pool_id: int | None = None
    states: tuple[str, ...] = ()
    q: str = ""


def job_list(*, user: User, filters: JobFilter | None = None) -> QuerySet[Job]:
    """Jobs ``user`` may see, newest first, filtered."""
    filters = filters or JobFilter()
    jobs = job_visible(user=user)
    if filters.workspace_id is not None:
        jobs = jobs.filter(workspace_id=filters.workspace_id)
    if filters.pool_id is not None:
        jobs = jobs.filter(pool_id=filters.pool_id)
    if filters.states:
        jobs = jobs.filter(state__in=filters.states)
    if filters.q:
        jobs = jobs.filter(Q(name__icontains=filters.q) | Q(command__icontains=filters.q))
    return jobs.order_by("-created_at", "-id")


def job_can_act(*, user: User, job: Job) -> bool:
    """Whether ``user`` may cancel, requeue, hold or release ``job``."""
    return membership_role(user=user, workspace=job.workspace) in ACTING_ROLES


def job_events(*, job: Job) -> list[JobEvent]:
    """The job's timeline, oldest first."""
    return list(JobEvent.objects.filter(job=job).select_related("actor").order_by("at", "id"))


def job_allocations(*, job: Job, attempt: int | None = None) -> list[Allocation]:
    """The ranks of one attempt (the current one by default), with their nodes."""
    attempt = job.attempt if attempt is None else attempt
    return list(
        Allocation.objects.filter(job=job, attempt=attempt).select_related("node").order_by("rank")
    )


def allocations_current(jobs: list[Job]) -> dict[int, list[Allocation]]:
    """The current attempt's ranks of each job, in one query."""
    result: dict[int, list[Allocation]] = defaultdict(list)
    attempts = {j.pk: j.attempt for j in jobs}
    rows = (
        Allocation.objects.filter(job_id__in=attempts)
        .select_related("node")
        .order_by("job_id", "rank")
    )
    for allocation in rows:
        if allocation.attempt == attempts[allocation.job_id]:
            result[allocation.job_id].append(allocation)
    return result


def queue_info(job_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Position, reason and estimated start of pending jobs, as the last pass left them."""
    if not job_ids:
        return {}
    try:
        raw = redis_client().hmget(QUEUE_KEY, [str(i) for i in job_ids])
    except Exception:
        return {}
    info = {}
    for job_id, value in zip(job_ids, raw, strict=True):
        entry = queue_entry(value)
        if entry is not None:
            if entry.get("estimated_start"):
                entry["estimated_start"] = datetime.fromtimestamp(entry["estimated_start"], tz=UTC)
            info[job_id] = entry
    return info


# Pools ----------------------------------------------------------------------------------


def pool_list() -> QuerySet[Pool]:
    """Every pool, with how many live nodes it holds."""
    live = Q(nodes__node__revoked_at__isnull=True)
    return Pool.objects.annotate(node_count=Count("nodes", filter=live)).order_by("name")


def pool_get(*, pool_id: int) -> Pool:
    """One pool, else NotFoundError."""
    try:
        return pool_list().get(pk=pool_id)
    except Pool.DoesNotExist:
        raise NotFoundError("Pool not found.", field="pool_id") from None


def pool_by_name(name: str) -> Pool | None:
    """The pool called ``name``, if any."""
    return Pool.objects.filter(name=name).first()


@dataclass
class WorkspaceUsage:
    """One workspace's share of a pool: guaranteed, maximum, used and borrowed GPUs."""

    workspace_id: int | None  # None: the other workspaces, summed
    name: str
    guaranteed: int = 0
    maximum: int | None = None
    weight: float = 1.0
    used: int = 0
    pending: int = 0

    @property
    def borrowed(self) -> int:
        """GPUs used beyond the guarantee."""
        return max(0, self.used - self.guaranteed)

    @property
    def within(self) -> int:
        """GPUs used within the guarantee."""
        return min(self.used, self.guaranteed)


@dataclass
class PoolUsage:
    """A pool's capacity and who uses it."""

    pool: Pool
    nodes: int = 0
    gpus: int = 0  # schedulable GPUs of its live nodes
    used: int = 0
    out: int = 0  # GPUs unhealthy or taken out
    pending_jobs: int = 0
    workspaces: list[WorkspaceUsage] = field(default_factory=list)

    @property
    def free(self) -> int:
        """Schedulable GPUs no job holds."""
        return max(0, self.gpus - self.used)


def _pool_capacity(pool: Pool) -> tuple[int, int, int]:
    """Live nodes, schedulable GPUs and GPUs out of service in ``pool``."""
    schedules = NodeSchedule.objects.filter(
        pool=pool, node__revoked_at__isnull=True, node__state__in=[Node.State.READY]
    ).values_list("node_id", "gpus_out")
    out_by_node = {node_id: set(out or []) for node_id, out in schedules}
    gpus, out = 0, 0
    rows = Gpu.objects.filter(node_id__in=out_by_node).values_list(
        "node_id", "index", "present", "health"
    )
    for node_id, index, present, health in rows:
        if present and health != Health.UNHEALTHY and index not in out_by_node[node_id]:
            gpus += 1
        else:
            out += 1
    return len(out_by_node), gpus, out


def pool_usage(*, user: User, pool: Pool) -> PoolUsage:
    """Capacity and per-workspace usage of ``pool`` as ``user`` may see it."""
    nodes, gpus, out = _pool_capacity(pool)
    usage = PoolUsage(pool=pool, nodes=nodes, gpus=gpus, out=out)
    visible = None if user.is_platform_admin else set(workspace_ids_member(user=user))
    rows: dict[int, WorkspaceUsage] = {}
    for quota in Quota.objects.filter(pool=pool):
        rows[quota.workspace_id] = WorkspaceUsage(
            quota.workspace_id,
            "",
            guaranteed=quota.guaranteed,
            maximum=quota.maximum,
            weight=quota.weight,
        )
    held = Allocation.objects.filter(
        job__pool=pool,
        state__in=[Allocation.State.STARTING, Allocation.State.RUNNING],
        job__state__in=HOLDING_STATES,
    ).values_list("job__workspace_id", "gpus")
    for workspace_id, gpu_list in held:
        row = rows.setdefault(workspace_id, WorkspaceUsage(workspace_id, ""))
        row.used += len(gpu_list)
        usage.used += len(gpu_list)
    pending = (
        Job.objects.filter(pool=pool, state=Job.State.PENDING)
        .values("workspace_id")
        .annotate(n=Count("pk"))
    )
    for item in pending:
        row = rows.setdefault(item["workspace_id"], WorkspaceUsage(item["workspace_id"], ""))
        row.pending += item["n"]
        usage.pending_jobs += item["n"]
    names = dict(Workspace.objects.filter(pk__in=list(rows)).values_list("pk", "name"))
    for workspace_id, row in rows.items():
        row.name = names.get(workspace_id, "?")
    shown, others = [], WorkspaceUsage(None, "Other workspaces")
    for row in sorted(rows.values(), key=lambda r: r.name.lower()):
        if visible is None or row.workspace_id in visible:
            shown.append(row)
        else:
            others.guaranteed += row.guaranteed
            others.used += row.used
            others.pending += row.pending
    if others.used or others.guaranteed or others.pending:
        shown.append(others)
    usage.workspaces = shown
    return usage


def pool_queue(
    *, user: User, pool: Pool, limit: int = 200
) -> tuple[list[Job], dict[int, Any], int]:
    """The pool's pending and held jobs ``user`` may see: the first ``limit`` in queue order
    (the position the last pass gave them; held jobs last), their queue info (position
    among all of the pool's pending jobs), and how many wait in all."""
    rows = list(
        job_visible(user=user)
        .filter(pool=pool, state__in=[Job.State.PENDING, Job.State.HELD])
        .values_list("pk", "state", "queue_order")
    )
    info = queue_info([pk for pk, state, _ in rows if state == Job.State.PENDING])
    rows.sort(
        key=lambda row: (
            row[1] == Job.State.HELD,
            info.get(row[0], {}).get("position") or 10**9,
            row[2],
            row[0],
        )
    )
    shown = [pk for pk, _, _ in rows[:limit]]
    by_id = job_visible(user=user).in_bulk(shown)
    return [by_id[pk] for pk in shown if pk in by_id], info, len(rows)


def quota_list(*, pool: Pool | None = None) -> QuerySet[Quota]:
    """Quotas, optionally of one pool."""
    quotas = Quota.objects.select_related("workspace", "pool")
    return quotas.filter(pool=pool) if pool is not None else quotas


def quota_get(*, quota_id: int) -> Quota:
    """One quota, else NotFoundError."""
    try:
        return quota_list().get(pk=quota_id)
    except Quota.DoesNotExist:
        raise NotFoundError("Quota not found.", field="quota_id") from None


def workspace_usage_gpus(*, workspace_id: int, pool_id: int) -> int:
    """GPUs a workspace's jobs hold in a pool right now."""
    rows = Allocation.objects.filter(
        job__workspace_id=workspace_id,
        job__pool_id=pool_id,
        state__in=[Allocation.State.STARTING, Allocation.State.RUNNING],
    ).values_list("gpus", flat=True)
    return sum(len(g) for g in rows)


def node_schedule(*, node: Node) -> NodeSchedule | None:
    """The scheduler's side of a node already authorised by the caller."""
    return NodeSchedule.objects.select_related("pool").filter(node=node).first()


def node_allocations(*, user: User, node: Node) -> list[Allocation]:
    """Ranks running on a node already authorised, with jobs ``user`` may see."""
    return list(
        Allocation.objects.filter(
            node=node,
            state__in=[Allocation.State.STARTING, Allocation.State.RUNNING],
            job__in=job_visible(user=user),
        )
        .select_related("job", "job__workspace")
        .order_by("job_id", "rank")
    )


def quota_visible(
    *, user: User, pool: Pool | None = None, workspace_id: int | None = None
) -> QuerySet[Quota]:
    """Quotas ``user`` may see: every one for platform admins, else their workspaces'."""
    quotas = quota_list(pool=pool)
    if workspace_id is not None:
        quotas = quotas.filter(workspace_id=workspace_id)
    if user.is_platform_admin:
        return quotas
    return quotas.filter(workspace_id__in=workspace_ids_member(user=user))


def quota_get_visible(*, user: User, quota_id: int) -> Quota:
    """One quota ``user`` may see, else NotFoundError."""
    try:
        return quota_visible(user=user).get(pk=quota_id)
    except Quota.DoesNotExist:
        raise NotFoundError("Quota not found.", field="quota_id") from None


def pool_nodes(*, visible: QuerySet[Node], pool: Pool) -> list[Node]:
    """The nodes of ``pool`` among ``visible`` (the caller's authorised node list), by name,
    with their schedule."""
    return list(visible.filter(schedule__pool=pool).select_related("schedule").order_by("name"))


def node_pools(*, visible: QuerySet[Node]) -> list[tuple[Node, str]]:
    """The nodes of ``visible`` (the caller's authorised node list), by name, each with the
    name of its pool ("" before the scheduler has placed it in one)."""
    result = []
    for node in visible.select_related("schedule__pool").order_by("name"):
        schedule = getattr(node, "schedule", None)
        result.append((node, schedule.pool.name if schedule is not None else ""))
    return result
