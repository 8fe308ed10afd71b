"""One scheduling pass: snapshot in, decisions out.

Pools are scheduled independently. In each, the queue is walked in the engine's order
(see ``ordering``); every job is, in turn:

1. refused if no node set of the pool could ever hold it (GPUs, CPU cores and memory per
   rank), or if it would take its workspace above its maximum;
2. placed if it fits on open GPUs of nodes with its cores and memory open (or, for a job
   sure to end before the reservation's estimated start, also on what the reservation
   holds idle);
3. otherwise given preemptions, or a wait on jobs already leaving, that make it fit, if it
   has the right to (see ``preemption``); the GPUs it will start on are claimed for it so
   that no later job of the pass takes them, and they count as its workspace's usage;
4. otherwise, if it is the first such job, given the pool's reservation (see ``reservation``);
5. otherwise told why it waits.

The pass reads no clock and iterates nothing whose order depends on the input's order, so the
same snapshot always gives the same decisions.
"""

import math
from collections import defaultdict
from collections.abc import Iterable

from apps.scheduler.engine.decisions import Decisions, PendingReason, Placement, Preemption
from apps.scheduler.engine.ordering import Share, fair_order
from apps.scheduler.engine.placement import Misses, Plan, find_slots
from apps.scheduler.engine.pool import NodeState, PoolState, RunningState, natural_key
from apps.scheduler.engine.preemption import PreemptionPlan, plan_preemption
from apps.scheduler.engine.reservation import Reservation, plan_reservation
from apps.scheduler.engine.snapshot import PRIORITIES, PendingJob, Quota, Snapshot

# Searches (each looks at every node of the pool) allowed per pool and pass: preemption
# searches for jobs within their guarantee, for other jobs, and reservation attempts.
GUARANTEE_SCANS = 32
PRIORITY_SCANS = 32
RESERVATION_ATTEMPTS = 16
# Nodes named in a reason before "and N more".
NAMED_NODES = 4

_PRIORITY_NAMES = {value: name for name, value in PRIORITIES.items()}


def _priority_name(priority: int) -> str:
    return _PRIORITY_NAMES.get(priority, f"priority {priority}")


def _node_list(names: tuple[str, ...]) -> str:
    shown = ", ".join(names[:NAMED_NODES])
    if len(names) > NAMED_NODES:
        shown += f" and {len(names) - NAMED_NODES} more"
    return shown


def _job_list(ids: Iterable[int]) -> str:
    return ", ".join(str(job_id) for job_id in ids)


def _number(value: float) -> str:
    return f"{value:g}"


def _memory(mb: float) -> str:
    if mb < 1024:
        return f"{_number(mb)} MB"
    return f"{_number(round(mb / 1024, 1))} GB"


def _and(parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return f"{', '.join(parts[:-1])} and {parts[-1]}"


# What a job asks for: nodes, GPUs per node, cores and memory per rank, nodes it avoids.
_Shape = tuple[int, int, float, float, frozenset[int]]


def _shape(job: PendingJob) -> _Shape:
    return (job.nodes, job.gpus_per_node, job.cpus, job.memory_mb, job.avoid_nodes)


def _smaller(shape: _Shape, job: PendingJob) -> bool:
    """Whether ``shape`` asks for no more than ``job`` in every respect and avoids no more."""
    nodes, gpus, cpus, memory, avoid = shape
    return (
        nodes <= job.nodes
        and gpus <= job.gpus_per_node
        and cpus <= job.cpus
        and memory <= job.memory_mb
        and avoid <= job.avoid_nodes
    )


class _PoolPass:
    """Decisions for one pool."""

    def __init__(
        self,
        pool: PoolState,
        running: list[RunningState],
        quotas: dict[tuple[int, int], Quota],
        now: float,
    ) -> None:
        self.pool = pool
        self.quotas = quotas
        self.now = now
        self.usage: dict[int, int] = defaultdict(int)
        for state in running:
            self.usage[state.job.workspace_id] += state.job.gpus
        self._classify(running)
        self.placements: list[Placement] = []
        self.preemptions: list[Preemption] = []
        self.pending: list[PendingReason] = []
        self.reservation: Reservation | None = None
        self.unreservable: list[_Shape] = []
        self.scans_left = {True: GUARANTEE_SCANS, False: PRIORITY_SCANS}
        self.failed: dict[int, list[tuple[_Shape, int, bool]]] = defaultdict(list)
        self.misses = {False: Misses(), True: Misses()}

    def share(self, workspace: int) -> Share:
        """The workspace's quota here; without a row: no guarantee, the pool as maximum."""
        row = self.quotas.get((workspace, self.pool.id))
        if row is None:
            return Share(guaranteed=0, maximum=self.pool.size, weight=1.0)
        maximum = max(0, row.maximum)
        return Share(
            guaranteed=min(max(0, row.guaranteed), maximum),
            maximum=maximum,
            weight=row.weight if row.weight > 0 else 1e-9,
        )

    def _classify(self, running: list[RunningState]) -> None:
        """Mark the jobs that bring their workspace above its guarantee as borrowing."""
        by_workspace: dict[int, list[RunningState]] = defaultdict(list)
        for state in running:
            by_workspace[state.job.workspace_id].append(state)
        self.borrowers: dict[int, int] = defaultdict(int)
        self.lowest_own: dict[int, int] = {}
        self.running_of: dict[int, list[RunningState]] = by_workspace
        self.lowest_borrowing = math.inf
        for workspace, states in sorted(by_workspace.items()):
            guaranteed = self.share(workspace).guaranteed
            held = 0
            for state in sorted(
                states, key=lambda s: (-s.job.priority, s.job.started_at, s.job.id)
            ):
                held += state.job.gpus
                state.borrowing = held > guaranteed
                if state.leaving:
                    continue
                priority = state.job.priority
                self.lowest_own[workspace] = min(self.lowest_own.get(workspace, priority), priority)
                if state.borrowing:
                    self.borrowers[workspace] += 1
                    self.lowest_borrowing = min(self.lowest_borrowing, priority)

    def run(self, jobs: list[PendingJob]) -> None:
        """Walk the queue in order and decide every job."""
        for job in fair_order(jobs, self.usage, self.share):
            self._decide(job)

    def _decide(self, job: PendingJob) -> None:
        if job.nodes < 1 or job.gpus_per_node < 1:
            self._wait(job, "asks for no GPUs")
            return
        if job.cpus < 0 or job.memory_mb < 0:
            self._wait(job, "asks for a negative amount of CPU or memory")
            return
        impossible = self._impossible(job)
        if impossible:
            self._wait(job, impossible)
            return
        share = self.share(job.workspace_id)
        used = self.usage[job.workspace_id]
        if used + job.gpus > share.maximum:
            if not self._reclaim_own(job, used + job.gpus - share.maximum):
                self._wait(
                    job,
                    f"over quota: workspace at {used} of its maximum {share.maximum} GPUs "
                    f"in this pool (job needs {job.gpus})",
                )
            return
        slots = self._fit(job)
        if slots is not None:
            self._place(job, slots, borrowed=used + job.gpus > share.guaranteed)
            return
        plan = self._preempt(job, within_guarantee=used + job.gpus <= share.guaranteed)
        if plan is not None:
            self._apply(job, plan, within_guarantee=used + job.gpus <= share.guaranteed)
            return
        accepting = self.pool.nodes_able(
            job.gpus_per_node,
            job.cpus,
            job.memory_mb,
            job.avoid_nodes,
            accepting=True,
            needed=job.nodes,
        )
        if accepting < job.nodes:
            self._wait(
                job,
                f"waiting for {job.nodes} node(s) with {self._needs(job)} to accept "
                f"jobs ({accepting} do; the others are cordoned or draining)",
            )
            return
        if self.reservation is None and not self._never_reservable(job):
            self.reservation = plan_reservation(self.pool, job, self.now)
            if self.reservation is not None:
                self._wait_reserved(job, self.reservation)
                return
            self.unreservable.append(_shape(job))
        self._wait(job, self._blocked(job))

    def _needs(self, job: PendingJob, *, free: bool = False) -> str:
        """What a rank of ``job`` needs on a node: GPUs, and cores and memory where limited."""
        parts = [f"{job.gpus_per_node} {'free GPUs' if free else 'GPUs'}"]
        parts.extend(self._amounts(job.cpus, job.memory_mb))
        return _and(parts)

    def _amounts(self, cpus: float, memory: float) -> list[str]:
        """``cpus`` cores and ``memory`` in words, each where asked for and the pool limits it."""
        parts = []
        if cpus > 0 and self.pool.limits_cpu:
            parts.append(f"{_number(cpus)} CPU core{'' if cpus == 1 else 's'}")
        if memory > 0 and self.pool.limits_memory:
            parts.append(f"{_memory(memory)} of memory")
        return parts

    def _never_reservable(self, job: PendingJob) -> bool:
        """Whether a job no larger, avoiding no more nodes, already found no reservation.

        GPUs only get scarcer during a pass, so such a job cannot find one either. After
        ``RESERVATION_ATTEMPTS`` failures the pool goes without a reservation this pass.
        """
        return len(self.unreservable) >= RESERVATION_ATTEMPTS or any(
            _smaller(shape, job) for shape in self.unreservable
        )

    def _impossible(self, job: PendingJob) -> str | None:
        """Why no node set of the pool could ever hold ``job``, naming what is lacking."""
        gpus, cpus, memory = job.gpus_per_node, job.cpus, job.memory_mb
        able = self.pool.nodes_able(
            gpus, cpus, memory, job.avoid_nodes, accepting=False, needed=job.nodes
        )
        if able >= job.nodes:
            return None
        checks = [(f"{gpus} GPUs", gpus, 0.0, 0.0)]
        checks.extend((what, 0, cpus, 0.0) for what in self._amounts(cpus, 0))
        checks.extend((what, 0, 0.0, memory) for what in self._amounts(0, memory))
        checks.append((self._needs(job), gpus, cpus, memory))
        for what, g, c, m in checks:
            count = self.pool.nodes_able(g, c, m, job.avoid_nodes, accepting=False)
            if count >= job.nodes:
                continue
            avoided = ""
            if job.avoid_nodes and count < self.pool.nodes_able(
                g, c, m, frozenset(), accepting=False
            ):
                avoided = " outside the nodes this job avoids"
            if count == 0:
                return f"no node in this pool has {what}{avoided}"
            return (
                f"this pool has only {count} node(s) with {what}{avoided}; "
                f"the job needs {job.nodes}"
            )
        return None

    def _short(self, job: PendingJob) -> bool:
        """Whether ``job`` surely ends before the reservation's estimated start."""
        reservation = self.reservation
        return (
            reservation is not None
            and reservation.start is not None
            and job.max_duration is not None
            and self.now + job.max_duration <= reservation.start
        )

    def _find(self, job: PendingJob, *, backfill: bool) -> Plan | None:
        """``find_slots``, also on what the reservation holds idle if ``backfill``; skipped
        when a job no larger already found no room."""
        misses = self.misses[backfill]
        if misses.covers(job):
            return None
        reservation = self.reservation
        slots = find_slots(self.pool, job, reservation.idle if backfill and reservation else None)
        if slots is None:
            misses.add(job)
        return slots

    def _fit(self, job: PendingJob) -> Plan | None:
        slots = None
        if self.pool.open_total >= job.gpus:
            slots = self._find(job, backfill=False)
        if slots is None and self.reservation is not None and self._short(job):
            slots = self._find(job, backfill=True)
        return slots

    def _place(self, job: PendingJob, slots: Plan, *, borrowed: bool) -> None:
        for node, gpus in slots:
            self.pool.take(node, gpus, job.cpus, job.memory_mb)
        self.usage[job.workspace_id] += job.gpus
        self.placements.append(
            Placement(
                job_id=job.id,
                slots=tuple((node.id, gpus) for node, gpus in slots),
                borrowed=borrowed,
            )
        )

    def _reclaim_own(self, job: PendingJob, excess: int) -> bool:
        """Make room within the workspace's maximum by preempting its own lower-priority
        jobs (at least ``excess`` GPUs of them); whether it did."""
        lower = [
            state
            for state in self.running_of.get(job.workspace_id, [])
            if not state.leaving and state.job.priority < job.priority
        ]
        if sum(state.job.gpus for state in lower) < excess or self.scans_left[False] <= 0:
            return False
        self.scans_left[False] -= 1
        plan = plan_preemption(self.pool, job, within_guarantee=False, own_only=True)
        if plan is None or sum(victim.job.gpus for victim in plan.victims) < excess:
            return False
        self._apply(job, plan, within_guarantee=False)
        return True

    def _may_preempt(self, job: PendingJob, within_guarantee: bool) -> bool:
        """A cheap test that rules out most jobs before a preemption search."""
        if self.pool.leaving_total > 0 or job.priority > self.lowest_borrowing:
            return True
        if job.priority > self.lowest_own.get(job.workspace_id, job.priority):
            return True
        return within_guarantee and any(
            count > 0
            for workspace, count in self.borrowers.items()
            if workspace != job.workspace_id
        )

    def _hopeless(self, job: PendingJob, within_guarantee: bool) -> bool:
        """Whether a search already failed for a job of this workspace no larger, with no fewer
        rights and avoiding no more nodes.

        Until the next preemption of the pass, room only shrinks, so this one would fail too.
        """
        return any(
            priority >= job.priority and within >= within_guarantee and _smaller(shape, job)
            for shape, priority, within in self.failed[job.workspace_id]
        )

    def _preempt(self, job: PendingJob, *, within_guarantee: bool) -> PreemptionPlan | None:
        if (
            self.scans_left[within_guarantee] <= 0
            or not self._may_preempt(job, within_guarantee)
            or self._hopeless(job, within_guarantee)
        ):
            return None
        self.scans_left[within_guarantee] -= 1
        plan = plan_preemption(self.pool, job, within_guarantee)
        if plan is None:
            self.failed[job.workspace_id].append((_shape(job), job.priority, within_guarantee))
        return plan

    def _apply(self, job: PendingJob, plan: PreemptionPlan, *, within_guarantee: bool) -> None:
        for victim in plan.victims:
            other = victim.job
            if within_guarantee and victim.borrowing and other.workspace_id != job.workspace_id:
                reason = (
                    f"preempted: workspace {job.workspace_id} reclaims its guaranteed GPUs "
                    f"for job {job.id}"
                )
            else:
                reason = f"preempted for job {job.id} ({_priority_name(job.priority)} priority)"
            self.preemptions.append(Preemption(job_id=other.id, for_job_id=job.id, reason=reason))
            if victim.borrowing:
                self.borrowers[other.workspace_id] -= 1
            self.pool.mark_leaving(victim)
        for node, gpus in plan.slots:
            self.pool.claim(node, gpus, job.cpus, job.memory_mb)
        self.usage[job.workspace_id] += job.gpus
        self.failed.clear()
        self._wait(job, f"waiting for preempted job(s) {_job_list(plan.waits_for)} to stop")

    def _blocked(self, job: PendingJob) -> str:
        reservation = self.reservation
        largest = self.pool.largest_open()
        available = self.pool.nodes_with_open(job.gpus_per_node)
        if reservation is not None:
            behind = self._find(job, backfill=True)
            if behind is not None:
                return f"behind job {reservation.job_id}, which holds the reservation"
            for rank, idle in reservation.idle.items():
                node = self.pool.nodes[rank]
                free = len(node.open) + len(idle & node.free)
                largest = max(largest, free)
                if len(node.open) < job.gpus_per_node <= free:
                    available += 1
        gpus_fit = largest >= job.gpus_per_node if job.nodes == 1 else available >= job.nodes
        if gpus_fit and self._amounts(job.cpus, job.memory_mb):
            if job.nodes == 1:
                return f"waiting for a node with {self._needs(job, free=True)}"
            return f"waiting for {job.nodes} nodes with {self._needs(job, free=True)} each"
        if job.nodes == 1:
            return (
                f"waiting for {job.gpus_per_node} GPUs on one node (largest free block: {largest})"
            )
        return (
            f"waiting for {job.nodes} nodes with {job.gpus_per_node} free GPUs each "
            f"({available} available)"
        )

    def _wait(self, job: PendingJob, reason: str) -> None:
        self.pending.append(
            PendingReason(
                job_id=job.id,
                position=len(self.pending) + 1,
                reason=reason,
                estimated_start=None,
            )
        )

    def _wait_reserved(self, job: PendingJob, reservation: Reservation) -> None:
        where = _node_list(reservation.names)
        if job.nodes > 1:
            where = f"each of {where}"
        self.pending.append(
            PendingReason(
                job_id=job.id,
                position=len(self.pending) + 1,
                reason=f"reserved: starts when {self._needs(job)} are free on {where}",
                estimated_start=reservation.start,
                reserved=True,
                reserved_slots=reservation.slots,
            )
        )


def _pools(snapshot: Snapshot) -> tuple[dict[int, PoolState], dict[int, NodeState]]:
    held: dict[int, set[int]] = defaultdict(set)
    cpus: dict[int, float] = defaultdict(float)
    memory: dict[int, float] = defaultdict(float)
    for job in snapshot.running:
        for node_id, gpus in job.slots:
            held[node_id].update(gpus)
            cpus[node_id] += max(0.0, job.cpus)
            memory[node_id] += max(0, job.memory_mb)
    views_by_pool = defaultdict(list)
    for view in snapshot.nodes:
        views_by_pool[view.pool_id].append(view)
    pools: dict[int, PoolState] = {}
    nodes: dict[int, NodeState] = {}
    for pool_id, views in views_by_pool.items():
        views.sort(key=lambda view: (natural_key(view.name), view.id))
        states = [
            NodeState(view, rank, held[view.id], cpus[view.id], memory[view.id])
            for rank, view in enumerate(views)
        ]
        pools[pool_id] = PoolState(pool_id, states)
        nodes.update((state.id, state) for state in states)
    return pools, nodes


def schedule(snapshot: Snapshot) -> Decisions:
    """Decide one pass: which pending jobs start where, which running jobs stop, why others wait."""
    now = snapshot.now
    pools, nodes = _pools(snapshot)
    running_by_pool: dict[int, list[RunningState]] = defaultdict(list)
    for job in sorted(snapshot.running, key=lambda job: job.id):
        state = RunningState(job, now)
        for node_id, gpus in job.slots:
            node = nodes.get(node_id)
            if node is None:
                continue
            usable = tuple(sorted(gpu for gpu in gpus if gpu in node.gpus))
            state.parts.append((node, usable))
            node.holders.append((state, usable))
        running_by_pool[job.pool_id].append(state)
        if state.leaving and state.parts:
            pools[state.parts[0][0].pool_id].mark_leaving(state)
    pending_by_pool: dict[int, list[PendingJob]] = defaultdict(list)
    for pending in snapshot.pending:
        pending_by_pool[pending.pool_id].append(pending)
    quotas = {
        (row.workspace_id, row.pool_id): row
        for row in sorted(
            snapshot.quotas,
            key=lambda q: (q.workspace_id, q.pool_id, q.guaranteed, q.maximum, q.weight),
        )
    }
    placements: list[Placement] = []
    preemptions: list[Preemption] = []
    reasons: list[PendingReason] = []
    for pool_id in sorted(pending_by_pool):
        pool = pools.get(pool_id) or PoolState(pool_id, [])
        work = _PoolPass(pool, running_by_pool[pool_id], quotas, now)
        work.run(pending_by_pool[pool_id])
        placements.extend(work.placements)
        preemptions.extend(work.preemptions)
        reasons.extend(work.pending)
    return Decisions(
        placements=tuple(placements), preemptions=tuple(preemptions), pending=tuple(reasons)
    )
