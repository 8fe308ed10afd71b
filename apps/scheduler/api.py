"""REST endpoints: jobs and their timeline, pools, quotas, and the scheduling side of nodes.

The node endpoints share the ``/api/nodes`` prefix with monitoring's node router; their
paths differ, so each request reaches exactly one of them.
"""

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest
from ninja import Query, Router, Status
from ninja.pagination import LimitOffsetPagination, paginate

from apps.accounts.selectors import User, workspace_get
from apps.monitoring import selectors as monitoring_selectors
from apps.monitoring.models import Node
from apps.scheduler import selectors, services
from apps.scheduler.models import Allocation, Job, NodeSchedule, Pool, Quota
from apps.scheduler.schemas import (
    JobEventOut,
    JobFilterIn,
    JobIn,
    JobOut,
    MoveIn,
    NodeAllocationOut,
    NodePoolIn,
    NodeScheduleOut,
    PoolIn,
    PoolOut,
    PoolPatch,
    PriorityIn,
    QuotaFilterIn,
    QuotaIn,
    QuotaOut,
    ReasonIn,
)
from apps.system.errors import ApplicationError, NotFoundError
from apps.system.pages import api_user

jobs_router = Router(tags=["jobs"])
pools_router = Router(tags=["pools"])
quotas_router = Router(tags=["quotas"])
nodes_router = Router(tags=["nodes"])

# Stored fields the job output reads straight from the row.
JOB_FIELDS = (
    "id", "workspace_id", "name", "kind", "command", "procs_per_node", "nodes",
    "gpus_per_node", "cpus", "memory_mb", "priority", "state", "state_reason", "intent",
    "attempt", "restarts", "max_restarts", "exit_code", "env", "workdir", "grace_seconds",
    "max_duration", "hang_timeout", "resume", "checkpoint_keep", "launch_env",
    "created_at", "scheduled_at", "started_at", "finished_at",
)  # fmt: skip


def _reason(payload: ReasonIn | None) -> str:
    return payload.reason if payload is not None else ""


def _pool_named(name: str) -> Pool:
    pool = selectors.pool_by_name(name)
    if pool is None:
        raise ApplicationError(f"There is no pool named {name!r}.", field="pool")
    return pool


class ShapedPagination(LimitOffsetPagination):
    """Limit/offset pages whose items are shaped a page at a time by ``shape(user, items)``,
    so extras (allocations, queue places, usage) cost a few queries per page, not per item."""

    def __init__(self, *, shape: Callable[[User, list[Any]], list[dict]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.shape = shape

    def paginate_queryset(
        self, queryset: Any, pagination: Any, request: HttpRequest, **params: Any
    ) -> Any:
        page = super().paginate_queryset(queryset, pagination, request, **params)
        page[self.items_attribute] = self.shape(api_user(request), list(page[self.items_attribute]))
        return page


# Jobs --------------------------------------------------------------------------------------


def _allocation_out(allocation: Allocation) -> dict[str, Any]:
    return {
        "rank": allocation.rank,
        "node_id": allocation.node_id,
        "node": allocation.node.name,
        "gpus": list(allocation.gpus),
        "state": allocation.state,
        "pid": allocation.pid,
        "exit_code": allocation.exit_code,
    }


def _job_out(
    job: Job, allocations: list[Allocation], queue: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        **{f: getattr(job, f) for f in JOB_FIELDS},
        "workspace": job.workspace.name,
        "pool": job.pool.name,
        "submitted_by": job.submitted_by.get_username() if job.submitted_by else None,
        "queue": queue if job.state == Job.State.PENDING else None,
        "allocation": [_allocation_out(a) for a in allocations],
    }


def jobs_out(user: User, jobs: list[Job]) -> list[dict[str, Any]]:
    """Jobs as the API shows them, with their current allocation and queue place."""
    allocations = selectors.allocations_current(jobs)
    queue = selectors.queue_info([j.pk for j in jobs if j.state == Job.State.PENDING])
    return [_job_out(j, allocations.get(j.pk, []), queue.get(j.pk)) for j in jobs]


def _job_detail(user: User, job_id: int) -> dict[str, Any]:
    return jobs_out(user, [selectors.job_get(user=user, job_id=job_id)])[0]


def _states(values: list[str]) -> tuple[str, ...]:
    states = tuple(s.strip() for value in values for s in value.split(",") if s.strip())
    for state in states:
        if state not in Job.State.values:
            allowed = ", ".join(Job.State.values)
            raise ApplicationError(f"Unknown state {state!r}; one of {allowed}.", field="state")
    return states


@jobs_router.get("", response=list[JobOut])
@paginate(ShapedPagination, shape=jobs_out)
def job_list(request: HttpRequest, filters: Query[JobFilterIn]) -> Any:
    """Jobs of your workspaces, newest first; filter by workspace, pool, states and text."""
    user = api_user(request)
    workspace_id = None
    if filters.workspace_id is not None:
        workspace_id = workspace_get(user=user, workspace_id=filters.workspace_id).pk
    pool_id = _pool_named(filters.pool).pk if filters.pool else None
    return selectors.job_list(
        user=user,
        filters=selectors.JobFilter(
            workspace_id=workspace_id,
            pool_id=pool_id,
            states=_states(filters.state),
            q=(filters.q or "").strip(),
        ),
    )


@jobs_router.post("", response={201: JobOut})
def job_submit(request: HttpRequest, payload: JobIn) -> Any:
    """Queue a job (members and workspace admins); it runs when the scheduler places it."""
    user = api_user(request)
    workspace = workspace_get(user=user, workspace_id=payload.workspace_id)
    spec = services.JobSpec(**payload.dict(exclude={"workspace_id"}))
    job = services.job_submit(actor=user, workspace=workspace, spec=spec)
    return Status(201, _job_out(job, [], None))


@jobs_router.get("/{int:job_id}", response=JobOut)
def job_detail(request: HttpRequest, job_id: int) -> Any:
    """One job: its state, why it waits, and the nodes and GPUs of its current attempt."""
    return _job_detail(api_user(request), job_id)


@jobs_router.get("/{int:job_id}/events", response=list[JobEventOut])
@paginate(LimitOffsetPagination)
def job_events(request: HttpRequest, job_id: int) -> Any:
    """The job's timeline, oldest first: every transition with its reason and actor."""
    return selectors.job_events(job=selectors.job_get(user=api_user(request), job_id=job_id))


def _job_action(
    request: HttpRequest, job_id: int, action: Callable[..., Job], **kwargs: Any
) -> dict[str, Any]:
    user = api_user(request)
    action(actor=user, job=selectors.job_get(user=user, job_id=job_id), **kwargs)
    return _job_detail(user, job_id)


@jobs_router.post("/{int:job_id}/cancel", response=JobOut)
def job_cancel(request: HttpRequest, job_id: int) -> Any:
    """Cancel a job: at once if it waits, after SIGTERM and its grace period if it runs."""
    return _job_action(request, job_id, services.job_cancel)


@jobs_router.post("/{int:job_id}/requeue", response=JobOut)
def job_requeue(request: HttpRequest, job_id: int) -> Any:
    """Put a job back in the queue; a running one is stopped first, a finished one reruns."""
    return _job_action(request, job_id, services.job_requeue)


@jobs_router.post("/{int:job_id}/hold", response=JobOut)
def job_hold(request: HttpRequest, job_id: int) -> Any:
    """Keep a job out of scheduling; a running one is stopped first."""
    return _job_action(request, job_id, services.job_hold)


@jobs_router.post("/{int:job_id}/release", response=JobOut)
def job_release(request: HttpRequest, job_id: int) -> Any:
    """Let a held job be scheduled again."""
    return _job_action(request, job_id, services.job_release)


@jobs_router.post("/{int:job_id}/priority", response=JobOut)
def job_priority(request: HttpRequest, job_id: int, payload: PriorityIn) -> Any:
    """Change a job's priority class (urgent: workspace admins only)."""
    return _job_action(request, job_id, services.job_priority_set, priority=payload.priority)


@jobs_router.post("/{int:job_id}/move", response=JobOut)
def job_move(request: HttpRequest, job_id: int, payload: MoveIn) -> Any:
    """Move a waiting job to the top or bottom of its pool's queue, or before another job
    (platform admins)."""
    user = api_user(request)
    before = None
    if payload.before is not None:
        try:
            before = selectors.job_get(user=user, job_id=payload.before)
        except NotFoundError:
            raise NotFoundError("Job not found.", field="before") from None
    return _job_action(request, job_id, services.job_move, before=before, position=payload.position)


# Pools -------------------------------------------------------------------------------------


def pools_out(user: User, pools: list[Pool]) -> list[dict[str, Any]]:
    """Pools as the API shows them, with their capacity and per-workspace usage."""
    result = []
    for pool in pools:
        usage = selectors.pool_usage(user=user, pool=pool)
        result.append(
            {
                "id": pool.pk,
                "name": pool.name,
                "description": pool.description,
                "is_default": pool.is_default,
                "node_count": getattr(pool, "node_count", usage.nodes),
                "gpus": usage.gpus,
                "used": usage.used,
                "free": usage.free,
                "out": usage.out,
                "pending_jobs": usage.pending_jobs,
                "workspaces": [
                    {
                        "workspace_id": w.workspace_id,
                        "name": w.name,
                        "guaranteed": w.guaranteed,
                        "maximum": w.maximum,
                        "weight": w.weight,
                        "used": w.used,
                        "borrowed": w.borrowed,
                        "pending": w.pending,
                    }
                    for w in usage.workspaces
                ],
            }
        )
    return result


def _pool_detail(user: User, pool_id: int) -> dict[str, Any]:
    return pools_out(user, [selectors.pool_get(pool_id=pool_id)])[0]


@pools_router.get("", response=list[PoolOut])
@paginate(ShapedPagination, shape=pools_out)
def pool_list(request: HttpRequest) -> Any:
    """Every pool with its capacity; usage names your workspaces, others are summed."""
    return selectors.pool_list()


@pools_router.post("", response={201: PoolOut})
def pool_create(request: HttpRequest, payload: PoolIn) -> Any:
    """Create a pool (platform admins)."""
    user = api_user(request)
    pool = services.pool_create(actor=user, name=payload.name, description=payload.description)
    return Status(201, _pool_detail(user, pool.pk))


@pools_router.get("/{int:pool_id}", response=PoolOut)
def pool_detail(request: HttpRequest, pool_id: int) -> Any:
    """One pool: nodes, schedulable, used and free GPUs, and who uses them."""
    return _pool_detail(api_user(request), pool_id)


@pools_router.patch("/{int:pool_id}", response=PoolOut)
def pool_update(request: HttpRequest, pool_id: int, payload: PoolPatch) -> Any:
    """Rename a pool, change its description or make it the default (platform admins)."""
    user = api_user(request)
    services.pool_update(
        actor=user, pool=selectors.pool_get(pool_id=pool_id), **payload.dict(exclude_unset=True)
    )
    return _pool_detail(user, pool_id)


@pools_router.delete("/{int:pool_id}", response={204: None})
def pool_delete(request: HttpRequest, pool_id: int) -> Any:
    """Delete a pool without nodes or unfinished jobs (platform admins)."""
    services.pool_delete(actor=api_user(request), pool=selectors.pool_get(pool_id=pool_id))
    return Status(204, None)


@pools_router.get("/{int:pool_id}/queue", response=list[JobOut])
@paginate(ShapedPagination, shape=jobs_out)
def pool_queue(request: HttpRequest, pool_id: int) -> Any:
    """The pool's pending and held jobs you may see, in queue order (the first 1,000), with
    why they wait."""
    user = api_user(request)
    pool = selectors.pool_get(pool_id=pool_id)
    jobs, _, _ = selectors.pool_queue(user=user, pool=pool, limit=1000)
    return jobs


# Quotas ------------------------------------------------------------------------------------


@quotas_router.get("", response=list[QuotaOut])
@paginate(LimitOffsetPagination)
def quota_list(request: HttpRequest, filters: Query[QuotaFilterIn]) -> Any:
    """Quotas: all for platform admins, else those of your workspaces."""
    pool = _pool_named(filters.pool) if filters.pool else None
    return selectors.quota_visible(
        user=api_user(request), pool=pool, workspace_id=filters.workspace_id
    )


@quotas_router.put("", response=QuotaOut)
def quota_set(request: HttpRequest, payload: QuotaIn) -> Quota:
    """Set what a workspace may use of a pool, creating or changing its quota (platform
    admins). The maximum cannot go below what the workspace uses now."""
    user = api_user(request)
    workspace = workspace_get(user=user, workspace_id=payload.workspace_id)
    quota = services.quota_set(
        actor=user,
        workspace=workspace,
        pool=_pool_named(payload.pool),
        guaranteed=payload.guaranteed,
        maximum=payload.maximum,
        weight=payload.weight,
    )
    return selectors.quota_get(quota_id=quota.pk)


@quotas_router.delete("/{int:quota_id}", response={204: None})
def quota_delete(request: HttpRequest, quota_id: int) -> Any:
    """Remove a quota: the workspace then only borrows idle GPUs there (platform admins)."""
    user = api_user(request)
    services.quota_delete(
        actor=user, quota=selectors.quota_get_visible(user=user, quota_id=quota_id)
    )
    return Status(204, None)


# Nodes -------------------------------------------------------------------------------------


def _schedule_out(node: Node) -> NodeSchedule:
    """The schedule of a node already authorised, as the node endpoints answer."""
    schedule = selectors.node_schedule(node=node)
    if schedule is None:
        raise NotFoundError("The node is in no pool yet.", field="node_id")
    schedule.node = node
    return schedule


@nodes_router.get("/{int:node_id}/schedule", response=NodeScheduleOut)
def node_schedule(request: HttpRequest, node_id: int) -> NodeSchedule:
    """The node's pool, whether it takes jobs, and the GPUs taken out."""
    return _schedule_out(monitoring_selectors.node_get(user=api_user(request), node_id=node_id))


@nodes_router.get("/{int:node_id}/allocations", response=list[NodeAllocationOut])
@paginate(LimitOffsetPagination)
def node_allocations(request: HttpRequest, node_id: int) -> Any:
    """The ranks running on the node, of the jobs you may see."""
    user = api_user(request)
    node = monitoring_selectors.node_get(user=user, node_id=node_id)
    return selectors.node_allocations(user=user, node=node)


@nodes_router.post("/{int:node_id}/cordon", response=NodeScheduleOut)
def node_cordon(
    request: HttpRequest, node_id: int, payload: ReasonIn | None = None
) -> NodeSchedule:
    """Place no new job on the node; running jobs carry on (admins of the node)."""
    user = api_user(request)
    node = monitoring_selectors.node_get(user=user, node_id=node_id)
    services.node_cordon(actor=user, node=node, reason=_reason(payload))
    return _schedule_out(node)


@nodes_router.post("/{int:node_id}/drain", response=NodeScheduleOut)
def node_drain(request: HttpRequest, node_id: int, payload: ReasonIn | None = None) -> NodeSchedule:
    """Place no new job on the node and requeue those running there (admins of the node)."""
    user = api_user(request)
    node = monitoring_selectors.node_get(user=user, node_id=node_id)
    services.node_cordon(actor=user, node=node, reason=_reason(payload), drain=True)
    return _schedule_out(node)


@nodes_router.post("/{int:node_id}/uncordon", response=NodeScheduleOut)
def node_uncordon(request: HttpRequest, node_id: int) -> NodeSchedule:
    """Let the node take jobs again; also ends a hold for flapping (admins of the node)."""
    user = api_user(request)
    node = monitoring_selectors.node_get(user=user, node_id=node_id)
    services.node_uncordon(actor=user, node=node)
    return _schedule_out(node)


@nodes_router.put("/{int:node_id}/pool", response=NodeScheduleOut)
def node_pool_set(request: HttpRequest, node_id: int, payload: NodePoolIn) -> NodeSchedule:
    """Move the node to another pool (platform admins); refused while jobs run on it."""
    user = api_user(request)
    node = monitoring_selectors.node_get(user=user, node_id=node_id)
    services.node_pool_set(actor=user, node=node, pool=_pool_named(payload.pool))
    return _schedule_out(node)


@nodes_router.post("/{int:node_id}/gpus/{int:index}/take-out", response=NodeScheduleOut)
def gpu_take_out(
    request: HttpRequest, node_id: int, index: int, payload: ReasonIn | None = None
) -> Any:
    """Take one GPU out of scheduling; a job on it is requeued (admins of the node)."""
    user = api_user(request)
    node = monitoring_selectors.node_get(user=user, node_id=node_id)
    services.gpu_take_out(actor=user, node=node, index=index, reason=_reason(payload))
    return _schedule_out(node)


@nodes_router.post("/{int:node_id}/gpus/{int:index}/put-back", response=NodeScheduleOut)
def gpu_put_back(request: HttpRequest, node_id: int, index: int) -> Any:
    """Return a GPU taken out to scheduling (admins of the node)."""
    user = api_user(request)
    node = monitoring_selectors.node_get(user=user, node_id=node_id)
    services.gpu_put_back(actor=user, node=node, index=index)
    return _schedule_out(node)
