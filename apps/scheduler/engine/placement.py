"""Gang placement on open GPUs: all ranks or none, packed to leave the least fragmentation.

A single-node job goes to the node with the fewest open GPUs that still fit it, preferring a
node where it fits inside one NVLink group; a multi-node job takes nodes whose open count
equals its GPUs per node first, then the smallest counts that fit. Ties go to the node whose
name comes first in natural order. A node is a candidate only if the job's CPU cores and
memory per rank are open there too. On a node, GPUs are taken inside the NVLink group that
fits most tightly, else across as few groups as possible, lowest indices first.
"""

import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping

from apps.scheduler.engine.pool import NodeState, PoolState
from apps.scheduler.engine.snapshot import PendingJob

Plan = list[tuple[NodeState, tuple[int, ...]]]

# Nodes of one bucket looked at for an NVLink fit before settling for the first that fits.
NVLINK_SCAN = 64


def choose_gpus(
    usable: Iterable[int], count: int, groups: tuple[frozenset[int], ...]
) -> tuple[int, ...]:
    """``count`` GPUs out of ``usable``: inside one NVLink group when possible, lowest first."""
    ordered = sorted(usable)
    if not groups:
        return tuple(ordered[:count])
    best: list[int] | None = None
    for group in groups:
        inside = [gpu for gpu in ordered if gpu in group]
        if len(inside) >= count and (best is None or len(inside) < len(best)):
            best = inside
    if best is not None:
        return tuple(best[:count])
    parts: list[list[int]] = []
    covered: set[int] = set()
    for group in groups:
        inside = [gpu for gpu in ordered if gpu in group and gpu not in covered]
        covered.update(inside)
        if inside:
            parts.append(inside)
    parts.extend([gpu] for gpu in ordered if gpu not in covered)
    parts.sort(key=lambda part: (-len(part), part[0]))
    chosen: list[int] = []
    for part in parts:
        chosen.extend(part[: count - len(chosen)])
        if len(chosen) == count:
            break
    return tuple(sorted(chosen))


def fits_one_group(usable: set[int], count: int, groups: tuple[frozenset[int], ...]) -> bool:
    """Whether ``count`` of ``usable`` fit inside one NVLink group (True when unknown)."""
    return not groups or any(len(usable & group) >= count for group in groups)


def find_slots(
    pool: PoolState, job: PendingJob, extra: Mapping[int, frozenset[int]] | None = None
) -> Plan | None:
    """Where ``job`` starts now, or None if it does not fit.

    ``extra`` maps node ranks to idle reserved GPUs the job may also use (short backfill),
    with the cores and memory held there for the reservation.
    """
    if job.gpus_per_node >= len(pool.buckets):
        return None
    if job.nodes == 1:
        return _single(pool, job, extra or {})
    return _gang(pool, job, extra or {})


def _backfill_room(node: NodeState, job: PendingJob) -> bool:
    """Whether the job's cores and memory are open or reserved on ``node``."""
    return (
        node.cpu.open + node.cpu.reserved >= job.cpus
        and node.memory.open + node.memory.reserved >= job.memory_mb
    )


def _single(pool: PoolState, job: PendingJob, extra: Mapping[int, frozenset[int]]) -> Plan | None:
    count, avoid, cpus, memory = job.gpus_per_node, job.avoid_nodes, job.cpus, job.memory_mb
    best: tuple[int, bool, int] | None = None
    for size in range(count, len(pool.buckets)):
        fallback: NodeState | None = None
        scanned = 0
        for rank in pool.buckets[size]:
            node = pool.nodes[rank]
            if (
                node.id in avoid
                or rank in extra
                or node.cpu.open < cpus
                or node.memory.open < memory
            ):
                continue
            if fits_one_group(node.open, count, node.groups):
                best = (size, False, rank)
                break
            fallback = fallback or node
            scanned += 1
            if scanned >= NVLINK_SCAN:
                break
        if best is None and fallback is not None:
            best = (size, True, fallback.rank)
        if best is not None:
            break
    for rank, reserved in extra.items():
        node = pool.nodes[rank]
        usable = node.open | (reserved & node.free)
        if (
            node.id in avoid
            or not node.accepting
            or len(usable) < count
            or not _backfill_room(node, job)
        ):
            continue
        key = (len(usable), not fits_one_group(usable, count, node.groups), rank)
        if best is None or key < best:
            best = key
    if best is None:
        return None
    node = pool.nodes[best[2]]
    usable = node.open | (extra.get(node.rank, frozenset()) & node.free)
    return [(node, choose_gpus(usable, count, node.groups))]


def _gang(pool: PoolState, job: PendingJob, extra: Mapping[int, frozenset[int]]) -> Plan | None:
    nodes, count, avoid = job.nodes, job.gpus_per_node, job.avoid_nodes
    cpus, memory = job.cpus, job.memory_mb
    picked: list[tuple[int, int]] = []
    for size in range(count, len(pool.buckets)):
        for rank in pool.buckets[size]:
            node = pool.nodes[rank]
            if (
                rank in extra
                or node.id in avoid
                or node.cpu.open < cpus
                or node.memory.open < memory
            ):
                continue
            picked.append((size, rank))
            if len(picked) == nodes:
                break
        if len(picked) == nodes:
            break
    for rank, reserved in extra.items():
        node = pool.nodes[rank]
        room = len(node.open | (reserved & node.free))
        if node.accepting and node.id not in avoid and room >= count and _backfill_room(node, job):
            picked.append((room, rank))
    if len(picked) < nodes:
        return None
    picked.sort()
    plan: Plan = []
    for rank in sorted(rank for _, rank in picked[:nodes]):
        node = pool.nodes[rank]
        usable = node.open | (extra.get(rank, frozenset()) & node.free)
        plan.append((node, choose_gpus(usable, count, node.groups)))
    return plan


class Misses:
    """Job shapes that found no room in this pass, so that larger ones skip the search.

    During a pass room only shrinks, so a job asking at least as much in every respect
    (nodes, GPUs per node, cores, memory) as one that did not fit, and avoiding at least
    the same nodes, does not fit either. Failures are kept by the nodes they avoided, then
    by (nodes, GPUs per node), as a staircase of (cores, memory) pairs: cores rising,
    memory falling, none asking at least as much as another. A job is compared with the
    failures that avoided no node and those that avoided exactly its nodes (jobs of one
    workspace usually avoid the same ones).
    """

    def __init__(self) -> None:
        self._stairs: dict[frozenset[int], dict[tuple[int, int], list[tuple[float, float]]]] = {}

    def covers(self, job: PendingJob) -> bool:
        """Whether a job no larger than ``job`` and avoiding no other nodes already failed."""
        for avoid in {frozenset(), job.avoid_nodes}:
            for (nodes, gpus), stair in self._stairs.get(avoid, {}).items():
                if nodes <= job.nodes and gpus <= job.gpus_per_node:
                    below = bisect_right(stair, (job.cpus, math.inf))
                    if below and stair[below - 1][1] <= job.memory_mb:
                        return True
        return False

    def add(self, job: PendingJob) -> None:
        """``job`` found no room."""
        cpus, memory = float(job.cpus), float(job.memory_mb)
        shapes = self._stairs.setdefault(job.avoid_nodes, {})
        stair = shapes.get((job.nodes, job.gpus_per_node), [])
        if any(step[0] <= cpus and step[1] <= memory for step in stair):
            return
        kept = [step for step in stair if step[0] < cpus or step[1] < memory]
        kept.append((cpus, memory))
        kept.sort()
        shapes[job.nodes, job.gpus_per_node] = kept
