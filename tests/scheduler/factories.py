"""Pools, scheduled nodes and jobs in any state for scheduler tests, written straight to
the database."""

import itertools
import time
from typing import Any

from django.utils import timezone

from apps.accounts.models import User, Workspace
from apps.monitoring.models import Node
from apps.scheduler.models import Allocation, Job, JobEvent, NodeSchedule, Pool, Quota
from tests.monitoring.factories import node_create

_order = itertools.count(1)

# States whose attempt holds GPUs, so a job made in them gets allocations.
PLACED_STATES = (
    Job.State.SCHEDULED,
    Job.State.STARTING,
    Job.State.RUNNING,
    Job.State.PREEMPTING,
    Job.State.STOPPING,
)


def pool_create(name: str = "a100", *, is_default: bool = False, description: str = "") -> Pool:
    """A pool; ``is_default`` makes it the one new nodes join."""
    return Pool.objects.create(name=name, is_default=is_default, description=description)


def scheduled_node_create(
    name: str,
    pool: Pool,
    *,
    gpus: int = 8,
    workspace: Workspace | None = None,
    state: str = NodeSchedule.State.ACTIVE,
    gpus_out: list[int] | None = None,
) -> Node:
    """A ready node with ``gpus`` GPUs in ``pool``."""
    node = node_create(name, workspace=workspace, gpus=gpus)
    NodeSchedule.objects.create(node=node, pool=pool, state=state, gpus_out=gpus_out or [])
    return node


def quota_create(
    workspace: Workspace, pool: Pool, *, guaranteed: int = 0, maximum: int = 8
) -> Quota:
    """What ``workspace`` may use of ``pool``."""
    return Quota.objects.create(
        workspace=workspace, pool=pool, guaranteed=guaranteed, maximum=maximum
    )


def job_create(
    workspace: Workspace,
    pool: Pool,
    *,
    name: str = "train",
    state: str = Job.State.PENDING,
    nodes: int = 1,
    gpus_per_node: int = 1,
    on: list[tuple[Node, list[int]]] | None = None,
    submitted_by: User | None = None,
    **fields: Any,
) -> Job:
    """A job in ``state``; a placed one runs its first attempt on ``on`` (node and GPU
    indices per rank), which defaults to GPUs 0.. of the pool's first nodes."""
    placed = state in PLACED_STATES
    job = Job.objects.create(
        workspace=workspace,
        pool=pool,
        name=name,
        command=fields.pop("command", "python train.py"),
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        state=state,
        queue_order=time.time() + next(_order),
        attempt=1 if placed else 0,
        submitted_by=submitted_by,
        scheduled_at=timezone.now() if placed else None,
        started_at=timezone.now() if state == Job.State.RUNNING else None,
        **fields,
    )
    JobEvent.objects.create(job=job, kind="submitted", reason="submitted", actor=submitted_by)
    if placed:
        if on is None:
            schedules = NodeSchedule.objects.filter(pool=pool).select_related("node")[:nodes]
            on = [(s.node, list(range(gpus_per_node))) for s in schedules]
        running = state != Job.State.SCHEDULED
        Allocation.objects.bulk_create(
            Allocation(
                job=job,
                attempt=1,
                rank=rank,
                node=node,
                gpus=gpus,
                state=Allocation.State.RUNNING if running else Allocation.State.STARTING,
                pid=4000 + rank if running else None,
                started_at=timezone.now() if running else None,
            )
            for rank, (node, gpus) in enumerate(on)
        )
        JobEvent.objects.create(
            job=job,
            attempt=1,
            kind="scheduled",
            from_state=Job.State.PENDING,
            to_state=state,
            reason="placed",
        )
    return job
