"""Short builders for engine snapshots, and lookups into the decisions they give."""

from collections.abc import Iterable, Mapping

from apps.scheduler.engine import (
    Decisions,
    NodeView,
    PendingJob,
    PendingReason,
    Quota,
    RunningJob,
    Snapshot,
    schedule,
)

NOW = 1_000_000.0
LOW, NORMAL, HIGH, URGENT = 0, 1, 2, 3
GB = 1024


def node(
    node_id: int,
    gpus: int = 8,
    *,
    pool: int = 1,
    name: str | None = None,
    groups: Iterable[Iterable[int]] = (),
    accepting: bool = True,
    out: Iterable[int] = (),
    cpus: float | None = None,
    memory_mb: int | None = None,
) -> NodeView:
    """A node with GPUs 0..gpus-1 except those ``out`` of service; CPU and memory unlimited
    unless given."""
    skipped = set(out)
    return NodeView(
        id=node_id,
        name=name or f"node-{node_id}",
        pool_id=pool,
        gpus=tuple(i for i in range(gpus) if i not in skipped),
        nvlink_groups=tuple(frozenset(group) for group in groups),
        accepting=accepting,
        cpus=cpus,
        memory_mb=memory_mb,
    )


def running(
    job_id: int,
    workspace: int,
    slots: Mapping[int, Iterable[int]],
    *,
    priority: int = NORMAL,
    pool: int = 1,
    age: float = 3600.0,
    checkpoint_age: float | None = None,
    ends_in: float | None = None,
    preemptible: bool = True,
    cpus: float = 0.0,
    memory_mb: int = 0,
) -> RunningJob:
    """A job started ``age`` seconds ago holding ``slots`` ({node id: GPU indices}), and
    ``cpus`` cores and ``memory_mb`` on each of those nodes."""
    return RunningJob(
        id=job_id,
        workspace_id=workspace,
        pool_id=pool,
        priority=priority,
        slots=tuple((node_id, tuple(gpus)) for node_id, gpus in slots.items()),
        started_at=NOW - age,
        last_checkpoint_at=None if checkpoint_age is None else NOW - checkpoint_age,
        ends_by=None if ends_in is None else NOW + ends_in,
        preemptible=preemptible,
        cpus=cpus,
        memory_mb=memory_mb,
    )


def pending(
    job_id: int,
    workspace: int = 1,
    *,
    gpus: int = 1,
    nodes: int = 1,
    priority: int = NORMAL,
    pool: int = 1,
    order: float | None = None,
    max_duration: float | None = None,
    avoid: Iterable[int] = (),
    cpus: float = 0.0,
    memory_mb: int = 0,
) -> PendingJob:
    """A pending job of ``nodes`` x ``gpus`` GPUs (and ``cpus`` cores and ``memory_mb`` per
    node), queued in id order unless told otherwise."""
    return PendingJob(
        id=job_id,
        workspace_id=workspace,
        pool_id=pool,
        priority=priority,
        nodes=nodes,
        gpus_per_node=gpus,
        order=float(job_id) if order is None else order,
        max_duration=max_duration,
        avoid_nodes=frozenset(avoid),
        cpus=cpus,
        memory_mb=memory_mb,
    )


def quota(
    workspace: int,
    guaranteed: int,
    maximum: int | None = None,
    *,
    pool: int = 1,
    weight: float = 1.0,
) -> Quota:
    """A quota row; the maximum defaults to a large number."""
    return Quota(
        workspace_id=workspace,
        pool_id=pool,
        guaranteed=guaranteed,
        maximum=10_000 if maximum is None else maximum,
        weight=weight,
    )


def snapshot(
    nodes: Iterable[NodeView],
    running: Iterable[RunningJob] = (),
    pending: Iterable[PendingJob] = (),
    quotas: Iterable[Quota] = (),
) -> Snapshot:
    """A snapshot taken at ``NOW``."""
    return Snapshot(
        now=NOW,
        nodes=tuple(nodes),
        running=tuple(running),
        pending=tuple(pending),
        quotas=tuple(quotas),
    )


def decide(
    nodes: Iterable[NodeView],
    running: Iterable[RunningJob] = (),
    pending: Iterable[PendingJob] = (),
    quotas: Iterable[Quota] = (),
) -> Decisions:
    """Run one pass on the snapshot these make."""
    return schedule(snapshot(nodes, running, pending, quotas))


def placed(decisions: Decisions) -> dict[int, dict[int, tuple[int, ...]]]:
    """{job id: {node id: GPUs}} for every placement."""
    return {p.job_id: dict(p.slots) for p in decisions.placements}


def why(decisions: Decisions, job_id: int) -> PendingReason:
    """The pending reason given for ``job_id``."""
    return next(r for r in decisions.pending if r.job_id == job_id)


def stopped(decisions: Decisions) -> dict[int, int]:
    """{preempted job id: the job it makes room for}."""
    return {p.job_id: p.for_job_id for p in decisions.preemptions}
