"""Gang placement on open GPUs: all ranks or none, packed to leave the least fragmentation.

A single-node job goes to the node with the fewest open GPUs that still fit it, preferring a
node where it fits inside one NVLink group; a multi-node job takes nodes whose open count
equals its GPUs per node first, then the smallest counts that fit. Ties go to the node whose
name comes first in natural order. On a node, GPUs are taken inside the NVLink group that
fits most tightly, else across as few groups as possible, lowest indices first.
"""

from collections.abc import Iterable, Mapping

from apps.scheduler.engine.pool import NodeState, PoolState

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
    pool: PoolState,
    nodes: int,
    gpus_per_node: int,
    avoid: frozenset[int],
    extra: Mapping[int, frozenset[int]] | None = None,
) -> Plan | None:
    """Where a ``nodes`` x ``gpus_per_node`` job starts now, or None if it does not fit.

    ``extra`` maps node ranks to idle reserved GPUs the job may also use (short backfill).
    """
    if gpus_per_node >= len(pool.buckets):
        return None
    if nodes == 1:
        return _single(pool, gpus_per_node, avoid, extra or {})
    return _gang(pool, nodes, gpus_per_node, avoid, extra or {})


def _single(
    pool: PoolState, count: int, avoid: frozenset[int], extra: Mapping[int, frozenset[int]]
) -> Plan | None:
    best: tuple[int, bool, int] | None = None
    for size in range(count, len(pool.buckets)):
        fallback: NodeState | None = None
        scanned = 0
        for rank in pool.buckets[size]:
            node = pool.nodes[rank]
            if node.id in avoid or rank in extra:
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
        if node.id in avoid or not node.accepting or len(usable) < count:
            continue
        key = (len(usable), not fits_one_group(usable, count, node.groups), rank)
        if best is None or key < best:
            best = key
    if best is None:
        return None
    node = pool.nodes[best[2]]
    usable = node.open | (extra.get(node.rank, frozenset()) & node.free)
    return [(node, choose_gpus(usable, count, node.groups))]


def _gang(
    pool: PoolState,
    nodes: int,
    count: int,
    avoid: frozenset[int],
    extra: Mapping[int, frozenset[int]],
) -> Plan | None:
    picked: list[tuple[int, int]] = []
    for size in range(count, len(pool.buckets)):
        for rank in pool.buckets[size]:
            if rank in extra or pool.nodes[rank].id in avoid:
                continue
            picked.append((size, rank))
            if len(picked) == nodes:
                break
        if len(picked) == nodes:
            break
    for rank, reserved in extra.items():
        node = pool.nodes[rank]
        room = len(node.open | (reserved & node.free))
        if node.accepting and node.id not in avoid and room >= count:
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
