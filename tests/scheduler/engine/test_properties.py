"""Property tests on random small clusters: the rules hold whatever the snapshot.

Nodes may limit CPU cores and memory, and jobs ask for some per rank; running jobs may even
hold more than a node has (a node that shrank), which must never let a placement overcommit.
"""

import math
import random
from dataclasses import replace

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from apps.scheduler.engine import (
    NodeView,
    PendingJob,
    Quota,
    RunningJob,
    Snapshot,
    schedule,
)
from tests.scheduler.engine.factories import GB, NOW
from tests.scheduler.engine.invariants import borrowing_jobs, check, gang_fits, held_gpus, room

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


NODE_CPUS = st.sampled_from((None, None, 4.0, 8.0, 16.0))
NODE_MEMORY = st.sampled_from((None, None, 8 * GB, 16 * GB, 32 * GB))
JOB_CPUS = st.sampled_from((0.0, 0.0, 1.0, 2.0, 4.0, 8.0))
JOB_MEMORY = st.sampled_from((0, 0, 1 * GB, 4 * GB, 8 * GB, 16 * GB))


@st.composite
def _nodes(draw: st.DrawFn, pools: int) -> list[NodeView]:
    nodes: list[NodeView] = []
    for pool in range(1, pools + 1):
        for _ in range(draw(st.integers(1, 4))):
            size = draw(st.sampled_from((1, 2, 4, 8)))
            out = draw(st.sets(st.integers(0, size - 1), max_size=1))
            topology = draw(st.sampled_from(("unknown", "one", "halves")))
            groups: tuple[frozenset[int], ...] = ()
            if topology == "one":
                groups = (frozenset(range(size)),)
            elif topology == "halves" and size > 1:
                groups = (frozenset(range(size // 2)), frozenset(range(size // 2, size)))
            node_id = len(nodes) + 1
            nodes.append(
                NodeView(
                    id=node_id,
                    name=f"n{draw(st.integers(0, 20))}-{node_id}",
                    pool_id=pool,
                    gpus=tuple(i for i in range(size) if i not in out),
                    nvlink_groups=groups,
                    accepting=draw(st.sampled_from((True, True, True, False))),
                    cpus=draw(NODE_CPUS),
                    memory_mb=draw(NODE_MEMORY),
                )
            )
    return nodes


def _sizes(nodes: list[NodeView]) -> dict[int, int]:
    """Physical GPU count per node (GPUs out of service included: jobs may still hold them)."""
    return {view.id: max(view.gpus, default=-1) + 1 for view in nodes}


@st.composite
def _running(
    draw: st.DrawFn,
    nodes: list[NodeView],
    workspaces: st.SearchStrategy[int],
    priorities: st.SearchStrategy[int] | None = None,
    stopping: bool = True,
) -> list[RunningJob]:
    sizes = _sizes(nodes)
    held: dict[int, set[int]] = {view.id: set() for view in nodes}
    jobs: list[RunningJob] = []
    overcommit = draw(st.sampled_from((False, False, False, True)))
    left = {
        view.id: (
            math.inf if view.cpus is None else view.cpus,
            math.inf if view.memory_mb is None else view.memory_mb,
        )
        for view in nodes
    }
    for _ in range(draw(st.integers(0, 10))):
        if not nodes:
            break
        first = draw(st.sampled_from(nodes))
        pool_nodes = [view for view in nodes if view.pool_id == first.pool_id]
        hosts = draw(st.permutations(pool_nodes))[: draw(st.integers(1, 2))]
        per_node = draw(st.integers(1, 4))
        cpus, memory = draw(JOB_CPUS), draw(JOB_MEMORY)
        slots = []
        for host in hosts:
            idle = sorted(set(range(sizes[host.id])) - held[host.id])
            cores, mb = left[host.id]
            if len(idle) < per_node or (not overcommit and (cores < cpus or mb < memory)):
                break
            slots.append((host.id, tuple(sorted(draw(st.permutations(idle))[:per_node]))))
        if len(slots) < len(hosts):
            continue
        for node_id, gpus in slots:
            held[node_id].update(gpus)
            cores, mb = left[node_id]
            left[node_id] = (cores - cpus, mb - memory)
        age = draw(st.floats(1, 10_000))
        jobs.append(
            RunningJob(
                id=1000 + len(jobs),
                workspace_id=draw(workspaces),
                pool_id=first.pool_id,
                priority=draw(st.integers(0, 3) if priorities is None else priorities),
                slots=tuple(slots),
                started_at=NOW - age,
                last_checkpoint_at=draw(st.none() | st.floats(NOW - age, NOW)),
                ends_by=draw(st.none() | st.floats(NOW - 100, NOW + 10_000)),
                preemptible=draw(st.sampled_from((True, True, True, not stopping))),
                cpus=cpus,
                memory_mb=memory,
            )
        )
    return jobs


@st.composite
def _pending(draw: st.DrawFn, job_id: int, pools: int, node_ids: int) -> PendingJob:
    return PendingJob(
        id=job_id,
        workspace_id=draw(st.integers(1, 3)),
        pool_id=draw(st.sampled_from((*range(1, pools + 1), 1, pools + 1))),
        priority=draw(st.integers(0, 3)),
        nodes=draw(st.sampled_from((1, 1, 1, 2, 3))),
        gpus_per_node=draw(st.sampled_from((1, 1, 2, 2, 3, 4, 8))),
        order=draw(st.integers(0, 20)),
        max_duration=draw(st.none() | st.floats(1, 20_000)),
        avoid_nodes=frozenset(draw(st.sets(st.integers(1, max(node_ids, 1)), max_size=1))),
        cpus=draw(JOB_CPUS),
        memory_mb=draw(JOB_MEMORY),
    )


@st.composite
def _quotas(draw: st.DrawFn, pools: int) -> list[Quota]:
    quotas = []
    for workspace in range(1, 4):
        for pool in range(1, pools + 1):
            if draw(st.booleans()):
                guaranteed = draw(st.integers(0, 16))
                quotas.append(
                    Quota(
                        workspace_id=workspace,
                        pool_id=pool,
                        guaranteed=guaranteed,
                        maximum=guaranteed + draw(st.integers(0, 16)),
                        weight=draw(st.sampled_from((0.5, 1.0, 2.0))),
                    )
                )
    return quotas


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    """A random small cluster: up to 2 pools of up to 4 nodes, jobs of every kind."""
    pools = draw(st.integers(1, 2))
    nodes = draw(_nodes(pools))
    running = draw(_running(nodes, st.integers(1, 3)))
    pending = [
        draw(_pending(job_id, pools, len(nodes)))
        for job_id in range(1, draw(st.integers(1, 10)) + 1)
    ]
    return Snapshot(
        now=NOW,
        nodes=tuple(nodes),
        running=tuple(running),
        pending=tuple(pending),
        quotas=tuple(draw(_quotas(pools))),
    )


@SETTINGS
@given(snapshots())
def test_every_pass_keeps_the_rules(snapshot: Snapshot) -> None:
    check(snapshot, schedule(snapshot))


@SETTINGS
@given(snapshots(), st.randoms(use_true_random=False))
def test_the_same_snapshot_in_any_order_gives_the_same_decisions(
    snapshot: Snapshot, rng: random.Random
) -> None:
    def shuffled(items: tuple) -> tuple:
        mixed = list(items)
        rng.shuffle(mixed)
        return tuple(mixed)

    other = replace(
        snapshot,
        nodes=shuffled(snapshot.nodes),
        running=shuffled(snapshot.running),
        pending=shuffled(snapshot.pending),
        quotas=shuffled(snapshot.quotas),
    )

    assert schedule(other) == schedule(snapshot) == schedule(snapshot)


@st.composite
def waiting_guarantees(draw: st.DrawFn) -> tuple[Snapshot, PendingJob]:
    """A job within its workspace's guarantee, and enough borrowed GPUs to preempt for it.

    Workspace 1 waits; workspaces 2 and 3 hold GPUs, some within their guarantees, some
    borrowed; later jobs of lower priority may queue behind.
    """
    nodes = [replace(view, accepting=True) for view in draw(_nodes(1)) if view.gpus]
    assume(nodes)
    running = draw(_running(nodes, st.integers(2, 3), stopping=False))
    priority = draw(st.integers(0, 3))
    largest = max(len(view.gpus) for view in nodes)
    job = PendingJob(
        id=1,
        workspace_id=1,
        pool_id=1,
        priority=priority,
        nodes=draw(st.integers(1, len(nodes))),
        gpus_per_node=draw(st.integers(1, largest)),
        order=draw(st.integers(0, 20)),
        cpus=draw(JOB_CPUS),
        memory_mb=draw(JOB_MEMORY),
    )
    guaranteed = job.gpus + draw(st.integers(0, 4))
    quotas = [Quota(workspace_id=1, pool_id=1, guaranteed=guaranteed, maximum=guaranteed + 4)]
    quotas += [
        Quota(workspace_id=w, pool_id=1, guaranteed=draw(st.integers(0, 8)), maximum=64)
        for w in (2, 3)
    ]
    later = [
        replace(draw(_pending(job_id, 1, len(nodes))), pool_id=1, priority=job.priority - 1)
        for job_id in range(2, draw(st.integers(2, 6)) if priority > 0 else 2)
    ]
    snapshot = Snapshot(
        now=NOW,
        nodes=tuple(nodes),
        running=tuple(running),
        pending=(job, *later),
        quotas=tuple(quotas),
    )
    lenders = tuple(j for j in running if j.id in borrowing_jobs(snapshot) and j.workspace_id != 1)
    free = {(v.id, gpu) for v in nodes for gpu in v.gpus} - held_gpus(tuple(running))
    left = room(snapshot, {j.id for j in lenders})
    assume(gang_fits(snapshot, job, free | held_gpus(lenders), left))
    return snapshot, job


@SETTINGS
@given(waiting_guarantees())
def test_a_waiting_guarantee_is_met_within_one_pass(case: tuple[Snapshot, PendingJob]) -> None:
    snapshot, job = case

    decisions = schedule(snapshot)

    check(snapshot, decisions)
    victims = {p.job_id for p in decisions.preemptions if p.for_job_id == job.id}
    assert job.id in {p.job_id for p in decisions.placements} or victims
    if victims:
        placed = {p.job_id for p in decisions.placements}
        queue = {j.id: j for j in snapshot.pending}
        started = tuple(
            RunningJob(
                id=p.job_id,
                workspace_id=9,
                pool_id=1,
                priority=0,
                slots=p.slots,
                started_at=NOW,
                cpus=queue[p.job_id].cpus,
                memory_mb=queue[p.job_id].memory_mb,
            )
            for p in decisions.placements
        )
        next_pass = replace(
            snapshot,
            running=tuple(j for j in snapshot.running if j.id not in victims) + started,
            pending=tuple(j for j in snapshot.pending if j.id not in placed),
        )
        assert job.id in {p.job_id for p in schedule(next_pass).placements}


@st.composite
def busy_queues(draw: st.DrawFn) -> Snapshot:
    """A busy pool with a big job at the head of the queue and small, short jobs behind it.

    The head job may be big in GPUs, or in CPU cores or memory, so that it waits while
    GPUs stay free on the nodes it reserves.
    """
    nodes = [
        NodeView(
            id=i,
            name=f"node-{i}",
            pool_id=1,
            gpus=tuple(range(8)),
            cpus=draw(st.sampled_from((None, 8.0, 16.0))),
            memory_mb=draw(st.sampled_from((None, 16 * GB, 32 * GB))),
        )
        for i in range(1, draw(st.integers(1, 4)) + 1)
    ]
    running = [
        replace(job, ends_by=NOW + draw(st.floats(0, 20_000)))
        for job in draw(_running(nodes, st.integers(1, 3), priorities=st.just(3)))
    ]
    head = PendingJob(
        id=1,
        workspace_id=1,
        pool_id=1,
        priority=1,
        nodes=draw(st.integers(1, len(nodes))),
        gpus_per_node=draw(st.sampled_from((2, 4, 8, 8))),
        order=0,
        cpus=draw(st.sampled_from((0.0, 8.0, 16.0))),
        memory_mb=draw(st.sampled_from((0, 16 * GB, 32 * GB))),
    )
    behind = [
        replace(
            draw(_pending(job_id, 1, len(nodes))),
            pool_id=1,
            priority=1,
            order=job_id,
            max_duration=draw(st.none() | st.floats(1, 3000)),
        )
        for job_id in range(2, draw(st.integers(2, 10)) + 1)
    ]
    return Snapshot(
        now=NOW, nodes=tuple(nodes), running=tuple(running), pending=(head, *behind), quotas=()
    )


@SETTINGS
@given(busy_queues())
def test_backfill_never_delays_the_reserved_job(snapshot: Snapshot) -> None:
    decisions = schedule(snapshot)

    check(snapshot, decisions)
