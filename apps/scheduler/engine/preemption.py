"""Which running jobs to stop so that a waiting job fits, losing the least work.

A pending job may stop (a) jobs of other workspaces that are borrowing, when it is itself
within its workspace's guarantee, and (b) jobs of strictly lower priority that are its own
workspace's or are borrowing. A running job is borrowing when, taking its workspace's jobs
in the pool by priority (highest first) then start time, it is one of those that bring the
workspace above its guarantee. Jobs already leaving are never chosen, but the GPUs they free
count at no cost.

The search is greedy and bounded: for every node that could host a rank, the cheapest set of
victims on that node (exact, over the few jobs a node holds) in lost work (seconds since the
last checkpoint, times GPUs), then fewest victims; the cheapest nodes win; victims no longer
needed once the others are counted are dropped again.
"""

from dataclasses import dataclass

from apps.scheduler.engine.placement import Plan, choose_gpus
from apps.scheduler.engine.pool import NodeState, PoolState, RunningState
from apps.scheduler.engine.snapshot import PendingJob

Cover = tuple[float, int, tuple[int, ...]]


@dataclass(frozen=True)
class PreemptionPlan:
    """Stop ``victims``; then the job starts on ``slots``, once ``waits_for`` have stopped."""

    victims: tuple[RunningState, ...]
    slots: Plan
    waits_for: tuple[int, ...]


def may_stop(victim: RunningState, job: PendingJob, within_guarantee: bool) -> bool:
    """Whether ``job`` may preempt ``victim``."""
    if victim.leaving:
        return False
    other = victim.job
    if other.priority < job.priority and (
        victim.borrowing or other.workspace_id == job.workspace_id
    ):
        return True
    return within_guarantee and victim.borrowing and other.workspace_id != job.workspace_id


def _cheapest_cover(options: list[tuple[RunningState, tuple[int, ...]]], need: int) -> Cover:
    """The victims freeing at least ``need`` GPUs at the least (lost work, count, ids)."""
    best: list[Cover | None] = [None] * (need + 1)
    best[0] = (0.0, 0, ())
    for holder, freed in options:
        step = list(best)
        for have in range(need):
            current = best[have]
            if current is None:
                continue
            reach = min(need, have + len(freed))
            candidate = (current[0] + holder.cost, current[1] + 1, (*current[2], holder.job.id))
            known = step[reach]
            if known is None or candidate < known:
                step[reach] = candidate
        best = step
    cover = best[need]
    if cover is None:
        raise ValueError("options do not free enough GPUs")
    return cover


def _base(node: NodeState) -> set[int]:
    """GPUs of ``node`` usable without stopping anyone: open, or held by leaving jobs."""
    if not node.leaving:
        return node.open
    return node.open | {gpu for gpu in node.leaving if gpu not in node.reserved}


def _freed(node: NodeState, victims: set[int]) -> set[int]:
    return {
        gpu
        for holder, gpus in node.holders
        if holder.job.id in victims
        for gpu in gpus
        if gpu not in node.reserved
    }


def plan_preemption(
    pool: PoolState, job: PendingJob, within_guarantee: bool
) -> PreemptionPlan | None:
    """The cheapest way to make ``job`` fit by stopping jobs it may preempt, if any."""
    count = job.gpus_per_node
    candidates: list[tuple[float, int, int, NodeState, set[int], tuple[int, ...]]] = []
    holders: dict[int, RunningState] = {}
    for node in pool.nodes:
        if not node.accepting or node.size < count or node.id in job.avoid_nodes:
            continue
        base = _base(node)
        if len(base) >= count:
            candidates.append((0.0, 0, node.rank, node, base, ()))
            continue
        options = []
        room = len(base)
        for holder, gpus in node.holders:
            if not may_stop(holder, job, within_guarantee):
                continue
            freed = (
                tuple(gpu for gpu in gpus if gpu not in node.reserved) if node.reserved else gpus
            )
            if freed:
                options.append((holder, freed))
                holders[holder.job.id] = holder
                room += len(freed)
        need = count - len(base)
        if room < count:
            continue
        options.sort(key=lambda option: option[0].job.id)
        cost, size, ids = _cheapest_cover(options, need)
        candidates.append((cost, size, node.rank, node, base, ids))
    if len(candidates) < job.nodes:
        return None
    candidates.sort(key=lambda item: item[:3])
    chosen = sorted(candidates[: job.nodes], key=lambda item: item[2])
    victims = {victim for item in chosen for victim in item[5]}

    def enough(keep: set[int]) -> bool:
        return all(len(base | _freed(node, keep)) >= count for _, _, _, node, base, _ in chosen)

    for victim in sorted(victims, key=lambda v: (-holders[v].cost, -v)):
        if enough(victims - {victim}):
            victims.discard(victim)
    slots: Plan = []
    waits: set[int] = set(victims)
    for _, _, _, node, base, _ in chosen:
        gpus = choose_gpus(base | _freed(node, victims), count, node.groups)
        waits.update(node.leaving[gpu] for gpu in gpus if gpu in node.leaving)
        slots.append((node, gpus))
    if not waits:
        return None
    return PreemptionPlan(
        victims=tuple(holders[victim] for victim in sorted(victims)),
        slots=slots,
        waits_for=tuple(sorted(waits)),
    )
