"""Which running jobs to stop so that a waiting job fits, losing the least work.

A pending job may stop (a) jobs of other workspaces that are borrowing, when it is itself
within its workspace's guarantee, and (b) jobs of strictly lower priority that are its own
workspace's or are borrowing. A running job is borrowing when, taking its workspace's jobs
in the pool by priority (highest first) then start time, it is one of those that bring the
workspace above its guarantee. Jobs already leaving are never chosen, but the GPUs they free
count at no cost.

The search is greedy and bounded: for every node that could host a rank, the cheapest set of
victims on that node in lost work (seconds since the last checkpoint, times GPUs), then
fewest victims, that frees enough GPUs, CPU cores and memory for the rank (exact over the
few jobs a node holds when only GPUs are short, else greedy); the cheapest nodes win;
victims no longer needed once the others are counted are dropped again.
"""

from dataclasses import dataclass

from apps.scheduler.engine.placement import Plan, choose_gpus
from apps.scheduler.engine.pool import Amount, NodeState, PoolState, RunningState
from apps.scheduler.engine.snapshot import PendingJob

Cover = tuple[float, int, tuple[int, ...]]
# A job that may be stopped on a node: GPUs it frees there, then cores and memory it holds.
Option = tuple[RunningState, tuple[int, ...], float, float]


@dataclass(frozen=True)
class PreemptionPlan:
    """Stop ``victims``; then the job starts on ``slots``, once ``waits_for`` have stopped."""

    victims: tuple[RunningState, ...]
    slots: Plan
    waits_for: tuple[int, ...]


def may_stop(
    victim: RunningState, job: PendingJob, within_guarantee: bool, own_only: bool = False
) -> bool:
    """Whether ``job`` may preempt ``victim`` (``own_only``: only its workspace's jobs)."""
    if victim.leaving:
        return False
    other = victim.job
    if own_only:
        return other.workspace_id == job.workspace_id and other.priority < job.priority
    if other.priority < job.priority and (
        victim.borrowing or other.workspace_id == job.workspace_id
    ):
        return True
    return within_guarantee and victim.borrowing and other.workspace_id != job.workspace_id


def _cheapest_gpu_cover(options: list[Option], need: int) -> Cover | None:
    """The victims freeing at least ``need`` GPUs at the least (lost work, count, ids), exactly:
    the cheapest way to reach each count, option after option."""
    best: list[Cover | None] = [None] * (need + 1)
    best[0] = (0.0, 0, ())
    for holder, freed, _, _ in options:
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
    return best[need]


def _cheapest_cover(options: list[Option], gpus: int, cpus: float, memory: float) -> Cover | None:
    """The victims freeing at least ``gpus`` GPUs, ``cpus`` cores and ``memory``, as
    (lost work, count, ids), or None if all of them together do not.

    When only GPUs are short, the cheapest exactly (``_cheapest_gpu_cover``). Otherwise
    greedily: the cheapest victims for the GPUs, then, while cores or memory are short, the
    victim losing the least work per share of the shortfall it frees; then those no longer
    needed once the others are counted are dropped, losing the most work first.
    """
    chosen: list[Option] = []
    if gpus > 0:
        cover = _cheapest_gpu_cover(options, gpus)
        if cover is None:
            return None
        chosen = [option for option in options if option[0].job.id in cover[2]]
    if cpus or memory:
        rest = [option for option in options if option not in chosen]
        while True:
            short_cpus = cpus - sum(option[2] for option in chosen)
            short_memory = memory - sum(option[3] for option in chosen)
            if short_cpus <= 0 and short_memory <= 0:
                break
            best: tuple[float, int] | None = None
            for index, (holder, _, cores, mb) in enumerate(rest):
                share = (min(cores, short_cpus) / short_cpus if short_cpus > 0 else 0.0) + (
                    min(mb, short_memory) / short_memory if short_memory > 0 else 0.0
                )
                if share > 0 and (best is None or holder.cost / share < best[0]):
                    best = (holder.cost / share, index)
            if best is None:
                return None
            chosen.append(rest.pop(best[1]))
        for option in sorted(chosen, key=lambda o: (-o[0].cost, -o[0].job.id)):
            others = [other for other in chosen if other is not option]
            if (
                sum(len(other[1]) for other in others) >= gpus
                and sum(other[2] for other in others) >= cpus
                and sum(other[3] for other in others) >= memory
            ):
                chosen = others
    chosen.sort(key=lambda option: option[0].job.id)
    return (
        sum(option[0].cost for option in chosen),
        len(chosen),
        tuple(option[0].job.id for option in chosen),
    )


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


def _fits(node: NodeState, base: set[int], victims: set[int], job: PendingJob) -> bool:
    """Whether a rank of ``job`` fits on ``node`` once ``victims`` and leaving jobs stop."""
    if len(base | _freed(node, victims)) < job.gpus_per_node:
        return False
    cores = mb = 0.0
    for holder, _ in node.holders:
        if holder.job.id in victims:
            cores += holder.cpus
            mb += holder.memory
    return (
        node.cpu.open + node.cpu.leaving + node.cpu.gained(cores) >= job.cpus
        and node.memory.open + node.memory.leaving + node.memory.gained(mb) >= job.memory_mb
    )


def _shortfall(amount: Amount, needed: float) -> float:
    """What stopped jobs must hold here for ``needed`` to fit (0: it already does)."""
    free = amount.open + amount.leaving
    return needed - free + amount.owed if needed > free else 0.0


def plan_preemption(
    pool: PoolState, job: PendingJob, within_guarantee: bool, own_only: bool = False
) -> PreemptionPlan | None:
    """The cheapest way to make ``job`` fit by stopping jobs it may preempt, if any
    (``own_only``: only lower-priority jobs of its own workspace)."""
    count, cpus, memory = job.gpus_per_node, job.cpus, job.memory_mb
    candidates: list[tuple[float, int, int, NodeState, set[int], tuple[int, ...]]] = []
    holders: dict[int, RunningState] = {}
    for node in pool.nodes:
        if (
            not node.accepting
            or node.size < count
            or node.id in job.avoid_nodes
            or (cpus and node.cpu.size < cpus)
            or (memory and node.memory.size < memory)
        ):
            continue
        base = _base(node)
        need = count - len(base)
        need_cpus = _shortfall(node.cpu, cpus) if cpus else 0.0
        need_memory = _shortfall(node.memory, memory) if memory else 0.0
        if need <= 0 and not need_cpus and not need_memory:
            candidates.append((0.0, 0, node.rank, node, base, ()))
            continue
        options: list[Option] = []
        room = len(base)
        for holder, gpus in node.holders:
            if not may_stop(holder, job, within_guarantee, own_only):
                continue
            freed = (
                tuple(gpu for gpu in gpus if gpu not in node.reserved) if node.reserved else gpus
            )
            if freed or (need_cpus and holder.cpus) or (need_memory and holder.memory):
                options.append((holder, freed, holder.cpus, holder.memory))
                holders[holder.job.id] = holder
                room += len(freed)
        if (
            room < count
            or (need_cpus and sum(option[2] for option in options) < need_cpus)
            or (need_memory and sum(option[3] for option in options) < need_memory)
        ):
            continue
        options.sort(key=lambda option: option[0].job.id)
        cover = _cheapest_cover(options, max(0, need), need_cpus, need_memory)
        if cover is not None:
            candidates.append((cover[0], cover[1], node.rank, node, base, cover[2]))
    if len(candidates) < job.nodes:
        return None
    candidates.sort(key=lambda item: item[:3])
    chosen = sorted(candidates[: job.nodes], key=lambda item: item[2])
    victims = {victim for item in chosen for victim in item[5]}

    def enough(keep: set[int]) -> bool:
        return all(_fits(node, base, keep, job) for _, _, _, node, base, _ in chosen)

    for victim in sorted(victims, key=lambda v: (-holders[v].cost, -v)):
        if enough(victims - {victim}):
            victims.discard(victim)
    slots: Plan = []
    waits: set[int] = set(victims)
    for _, _, _, node, base, _ in chosen:
        gpus = choose_gpus(base | _freed(node, victims), count, node.groups)
        waits.update(node.leaving[gpu] for gpu in gpus if gpu in node.leaving)
        short_cpus = node.cpu.open < job.cpus
        short_memory = node.memory.open < job.memory_mb
        waits.update(
            holder.job.id
            for holder, _ in node.holders
            if holder.leaving and ((short_cpus and holder.cpus) or (short_memory and holder.memory))
        )
        slots.append((node, gpus))
    if not waits:
        return None
    return PreemptionPlan(
        victims=tuple(holders[victim] for victim in sorted(victims)),
        slots=slots,
        waits_for=tuple(sorted(waits)),
    )
