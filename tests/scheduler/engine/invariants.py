"""Rules every pass must keep, checked from the snapshot alone (no engine code)."""

import math
from collections import defaultdict
from collections.abc import Iterable

from apps.scheduler.engine import Decisions, PendingJob, Placement, RunningJob, Snapshot
from apps.scheduler.engine.snapshot import Slots

Gpu = tuple[int, int]
# Cores and memory (MB) left on a node; infinite where the node does not limit them.
Room = dict[int, tuple[float, float]]


def borrowing_jobs(snapshot: Snapshot) -> set[int]:
    """Running jobs that bring their workspace above its guarantee in their pool.

    A workspace's jobs count by priority (highest first), then start time, then id.
    """
    guaranteed = {(q.workspace_id, q.pool_id): q.guaranteed for q in snapshot.quotas}
    jobs: dict[tuple[int, int], list[RunningJob]] = defaultdict(list)
    for job in snapshot.running:
        jobs[job.workspace_id, job.pool_id].append(job)
    borrowing = set()
    for key, mine in jobs.items():
        held = 0
        for job in sorted(mine, key=lambda j: (-j.priority, j.started_at, j.id)):
            held += job.gpus
            if held > guaranteed.get(key, 0):
                borrowing.add(job.id)
    return borrowing


def room(
    snapshot: Snapshot,
    gone: set[int] | frozenset[int] = frozenset(),
    placements: Iterable[Placement] = (),
) -> Room:
    """Cores and memory left on every node once the running jobs in ``gone`` have stopped
    and ``placements`` have started (each rank holds its job's request on its node)."""
    queue = {job.id: job for job in snapshot.pending}
    left = {
        view.id: (
            math.inf if view.cpus is None else view.cpus,
            math.inf if view.memory_mb is None else view.memory_mb,
        )
        for view in snapshot.nodes
    }
    holders: list[tuple[Slots, float, float]] = [
        (job.slots, job.cpus, job.memory_mb) for job in snapshot.running if job.id not in gone
    ]
    for placement in placements:
        job = queue[placement.job_id]
        holders.append((placement.slots, job.cpus, job.memory_mb))
    for slots, cpus, memory in holders:
        for node_id, _ in slots:
            if node_id in left:
                cores, mb = left[node_id]
                left[node_id] = (cores - cpus, mb - memory)
    return left


def has_room(job: PendingJob, cores: float, mb: float) -> bool:
    """Whether a rank of ``job`` fits in ``cores`` and ``mb`` (a job asking none always does)."""
    return (job.cpus <= 0 or cores >= job.cpus) and (job.memory_mb <= 0 or mb >= job.memory_mb)


def gang_fits(snapshot: Snapshot, job: PendingJob, usable: set[Gpu], left: Room) -> bool:
    """Whether ``job`` fits on ``usable`` GPUs of accepting nodes of its pool it may use, with
    its cores and memory ``left`` there."""
    hosts = 0
    for view in snapshot.nodes:
        if view.pool_id != job.pool_id or not view.accepting or view.id in job.avoid_nodes:
            continue
        if sum(
            1 for gpu in view.gpus if (view.id, gpu) in usable
        ) >= job.gpus_per_node and has_room(job, *left[view.id]):
            hosts += 1
    return hosts >= job.nodes


def held_gpus(jobs: tuple[RunningJob, ...]) -> set[Gpu]:
    """Every (node, GPU) a running job holds."""
    return {(node_id, gpu) for job in jobs for node_id, gpus in job.slots for gpu in gpus}


def check(snapshot: Snapshot, decisions: Decisions) -> None:
    """Assert the rules of a pass; fails with the rule broken."""
    nodes = {view.id: view for view in snapshot.nodes}
    queue = {job.id: job for job in snapshot.pending}
    running = {job.id: job for job in snapshot.running}
    decided = [p.job_id for p in decisions.placements] + [r.job_id for r in decisions.pending]
    assert sorted(decided) == sorted(queue), "every pending job is placed or given a reason"
    positions: dict[int, list[int]] = defaultdict(list)
    for reason in decisions.pending:
        positions[queue[reason.job_id].pool_id].append(reason.position)
    for numbers in positions.values():
        assert numbers == list(range(1, len(numbers) + 1)), "positions count 1, 2, 3... per pool"

    taken = held_gpus(snapshot.running)
    free = {(v.id, gpu) for v in snapshot.nodes for gpu in v.gpus} - taken
    usage: dict[tuple[int, int], int] = defaultdict(int)
    for holder in snapshot.running:
        usage[holder.workspace_id, holder.pool_id] += holder.gpus
    quotas = {(q.workspace_id, q.pool_id): q for q in snapshot.quotas}
    pool_size: dict[int, int] = defaultdict(int)
    for view in snapshot.nodes:
        pool_size[view.pool_id] += len(view.gpus)
    placed_gpus: dict[tuple[int, int], int] = defaultdict(int)
    for placement in decisions.placements:
        job = queue[placement.job_id]
        hosts = [node_id for node_id, _ in placement.slots]
        assert len(hosts) == len(set(hosts)) == job.nodes, "a gang gets all its nodes"
        for node_id, gpus in placement.slots:
            view = nodes[node_id]
            assert view.pool_id == job.pool_id, "placed in its own pool"
            assert view.accepting, "placed on an accepting node"
            assert node_id not in job.avoid_nodes, "never on an avoided node"
            assert len(gpus) == len(set(gpus)) == job.gpus_per_node, "every rank whole"
            for gpu in gpus:
                assert (node_id, gpu) in free, "only on free, schedulable GPUs"
                assert (node_id, gpu) not in taken, "never two jobs on one GPU"
                taken.add((node_id, gpu))
        key = (job.workspace_id, job.pool_id)
        placed_gpus[key] += job.gpus
        quota = quotas.get(key)
        if not placement.borrowed:
            assert quota is not None, "a workspace without a quota only borrows"
            assert usage[key] + placed_gpus[key] <= quota.guaranteed, "borrowed when above it"
    for key, total in placed_gpus.items():
        row = quotas.get(key)
        maximum = row.maximum if row else pool_size[key[1]]
        assert usage[key] + total <= maximum, "never above a workspace's maximum"
    _check_cpu_and_memory(snapshot, decisions)

    borrowing = borrowing_jobs(snapshot)
    victims: dict[int, list[RunningJob]] = defaultdict(list)
    for preemption in decisions.preemptions:
        victim = running[preemption.job_id]
        waiting = queue[preemption.for_job_id]
        assert victim.preemptible, "a job already stopping is not preempted again"
        assert preemption.for_job_id not in {p.job_id for p in decisions.placements}
        by_priority = victim.priority < waiting.priority and (
            victim.workspace_id == waiting.workspace_id or victim.id in borrowing
        )
        row = quotas.get((waiting.workspace_id, waiting.pool_id))
        guaranteed = row.guaranteed if row else 0
        by_guarantee = (
            victim.id in borrowing
            and victim.workspace_id != waiting.workspace_id
            and usage[waiting.workspace_id, waiting.pool_id] + waiting.gpus <= guaranteed
        )
        assert by_priority or by_guarantee, "only borrowers and lower priorities are preempted"
        victims[waiting.id].append(victim)
    stopped = [p.job_id for p in decisions.preemptions]
    assert len(stopped) == len(set(stopped)), "a job is preempted once"
    stopping = {j.id for j in snapshot.running if not j.preemptible}
    leaving = held_gpus(tuple(running[job_id] for job_id in stopping))
    soon = held_gpus(tuple(running[job_id] for job_id in stopped))
    left = room(snapshot, stopping | set(stopped), decisions.placements)
    for job_id in victims:
        assert gang_fits(snapshot, queue[job_id], (free - taken) | soon | leaving, left), (
            "preemptions make the job fit"
        )

    _check_reservations(snapshot, decisions, stopping | set(stopped))


def _check_cpu_and_memory(snapshot: Snapshot, decisions: Decisions) -> None:
    """No placement takes cores or memory a node does not have free."""
    queue = {job.id: job for job in snapshot.pending}
    free = {node_id: (max(0.0, c), max(0.0, m)) for node_id, (c, m) in room(snapshot).items()}
    placed: dict[int, tuple[float, float]] = defaultdict(lambda: (0.0, 0.0))
    for placement in decisions.placements:
        job = queue[placement.job_id]
        for node_id, _ in placement.slots:
            cores, mb = placed[node_id]
            placed[node_id] = (cores + job.cpus, mb + job.memory_mb)
    for node_id, (cores, mb) in placed.items():
        assert cores <= free[node_id][0], "never more CPU cores than a node has free"
        assert mb <= free[node_id][1], "never more memory than a node has free"


def _check_reservations(snapshot: Snapshot, decisions: Decisions, stopped: set[int]) -> None:
    """One reservation per pool, and no placement delays it.

    ``stopped`` are the running jobs being stopped (preempted in this pass, or already).
    """
    nodes = {view.id: view for view in snapshot.nodes}
    queue = {job.id: job for job in snapshot.pending}
    pools = [queue[r.job_id].pool_id for r in decisions.pending if r.reserved]
    assert len(pools) == len(set(pools)), "one reservation per pool"
    for reason in decisions.pending:
        if not reason.reserved:
            continue
        job = queue[reason.job_id]
        start = reason.estimated_start
        hosts = [node_id for node_id, _ in reason.reserved_slots]
        assert len(hosts) == len(set(hosts)) == job.nodes
        reserved: set[Gpu] = set()
        for node_id, gpus in reason.reserved_slots:
            view = nodes[node_id]
            assert view.pool_id == job.pool_id
            assert view.accepting
            assert node_id not in job.avoid_nodes
            assert len(set(gpus)) == job.gpus_per_node
            assert set(gpus) <= set(view.gpus)
            reserved.update((node_id, gpu) for gpu in gpus)
        for other in snapshot.running:
            busy = reserved & held_gpus((other,))
            if busy and start is not None and other.preemptible and other.id not in stopped:
                assert other.ends_by is not None, "a start is estimated only from known ends"
                assert other.ends_by <= start, "held GPUs free up by the estimated start"
        for placement in decisions.placements:
            used = {(node_id, gpu) for node_id, gpus in placement.slots for gpu in gpus}
            if used & reserved:
                backfill = queue[placement.job_id]
                assert start is not None, "no backfill on GPUs held without an estimate"
                assert backfill.max_duration is not None, "only jobs sure to end backfill"
                assert snapshot.now + backfill.max_duration <= start, "backfill never delays it"
        gone = {
            other.id
            for other in snapshot.running
            if start is None
            or other.id in stopped
            or (other.ends_by is not None and other.ends_by <= start)
        }
        staying = [
            placement
            for placement in decisions.placements
            if start is None
            or (max_duration := queue[placement.job_id].max_duration) is None
            or snapshot.now + max_duration > start
        ]
        left = room(snapshot, gone, staying)
        for node_id in hosts:
            assert has_room(job, *left[node_id]), "its cores and memory are free by its start"
