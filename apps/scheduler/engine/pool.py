"""The mutable state of one pool during a pass: who holds which GPU, and what is still open.

Every node tracks its GPUs as free (idle and schedulable), claimed (promised to a job that
waits for preempted jobs to stop), reserved (held for the pool's reservation) and leaving
(held by a job that is being stopped). ``open`` = free - claimed - reserved is what an
ordinary placement may use; accepting nodes are indexed by their open count so that a
placement looks at a handful of buckets instead of every node. CPU cores and memory are
tracked the same way, as amounts (see ``Amount``); they filter the nodes of a bucket.
"""

import math
import re
from bisect import bisect_left, insort
from collections import Counter

from apps.scheduler.engine.snapshot import NodeView, RunningJob

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[str | int, ...]:
    """Sort key that orders ``node-2`` before ``node-10``."""
    return tuple(int(part) if i % 2 else part for i, part in enumerate(_DIGITS.split(name)))


class Amount:
    """One resource of a node counted as an amount (CPU cores or memory) during a pass.

    ``open`` is what an ordinary placement may use now. ``reserved`` is held for the pool's
    reservation (short backfill may use it). ``leaving`` is held by jobs being stopped and
    not yet promised to anyone. ``owed`` is what the node must get back from stopping or
    ending jobs before any of it is usable again: what running jobs hold beyond the node's
    size, then what the reservation counts on jobs ending to free.
    """

    __slots__ = ("leaving", "open", "owed", "reserved", "size")

    def __init__(self, size: float | None, held: float) -> None:
        self.size = math.inf if size is None else float(size)
        self.open = max(0.0, self.size - held)
        self.owed = max(0.0, held - self.size)
        self.reserved = 0.0
        self.leaving = 0.0

    def gained(self, held: float) -> float:
        """What becomes usable when jobs holding ``held`` here stop."""
        return max(0.0, held - self.owed)

    def take(self, amount: float) -> None:
        """A placement starts with ``amount`` (open, or reserved for short backfill)."""
        self.open -= amount
        if self.open < 0:
            self.reserved += self.open
            self.open = 0.0

    def claim(self, amount: float) -> None:
        """Promise ``amount`` to a job that starts once jobs stop: leaving first, then open."""
        from_leaving = min(amount, self.leaving)
        self.leaving -= from_leaving
        self.open -= amount - from_leaving

    def reserve(self, amount: float) -> None:
        """Hold ``amount`` for the reservation: open now, then leaving, then owed by ending jobs."""
        held = min(amount, self.open)
        self.open -= held
        self.reserved += held
        from_leaving = min(amount - held, self.leaving)
        self.leaving -= from_leaving
        self.owed += amount - held - from_leaving

    def release(self, held: float) -> None:
        """A job holding ``held`` here is being stopped."""
        paid = min(held, self.owed)
        self.owed -= paid
        self.leaving += held - paid


class RunningState:
    """A running job as the pass sees it: its cost if stopped, and whether it is leaving.

    ``parts`` lists its ranks on nodes of the pool with their schedulable GPUs; ``cpus``
    and ``memory`` are what each rank holds.
    """

    __slots__ = ("borrowing", "cost", "cpus", "job", "leaving", "memory", "parts")

    def __init__(self, job: RunningJob, now: float) -> None:
        self.job = job
        since = job.last_checkpoint_at if job.last_checkpoint_at is not None else job.started_at
        self.cost = max(0.0, now - since) * job.gpus
        self.borrowing = False
        self.leaving = not job.preemptible
        self.cpus = max(0.0, float(job.cpus))
        self.memory = max(0.0, float(job.memory_mb))
        self.parts: list[tuple[NodeState, tuple[int, ...]]] = []


class NodeState:
    """One node of the pool, with its GPUs split by what they may be used for, and its CPU
    cores and memory as amounts (``held_cpus`` and ``held_memory`` by running jobs)."""

    __slots__ = (
        "accepting",
        "claimed",
        "cpu",
        "free",
        "gpus",
        "groups",
        "holders",
        "id",
        "leaving",
        "memory",
        "name",
        "open",
        "pool_id",
        "rank",
        "reserved",
        "size",
    )

    def __init__(
        self,
        view: NodeView,
        rank: int,
        held: set[int],
        held_cpus: float,
        held_memory: float,
    ) -> None:
        self.id = view.id
        self.name = view.name
        self.rank = rank
        self.pool_id = view.pool_id
        self.accepting = view.accepting
        self.gpus = frozenset(view.gpus)
        self.size = len(self.gpus)
        self.groups = tuple(
            sorted((group for group in view.nvlink_groups if group), key=lambda g: sorted(g))
        )
        self.free = set(self.gpus - held)
        self.open = set(self.free)
        self.claimed: set[int] = set()
        self.reserved: set[int] = set()
        self.leaving: dict[int, int] = {}
        self.holders: list[tuple[RunningState, tuple[int, ...]]] = []
        self.cpu = Amount(view.cpus, held_cpus)
        self.memory = Amount(view.memory_mb, held_memory)


def _largest_first(nodes: list[NodeState]) -> list[tuple[int, float, float, int]]:
    """The node sizes (GPUs, cores, memory) found among ``nodes``, largest first, with counts."""
    shapes = Counter((node.size, node.cpu.size, node.memory.size) for node in nodes)
    return sorted(((*shape, number) for shape, number in shapes.items()), reverse=True)


class PoolState:
    """The nodes of one pool, sorted by natural name, with accepting nodes bucketed by open GPUs."""

    def __init__(self, pool_id: int, nodes: list[NodeState]) -> None:
        self.id = pool_id
        self.nodes = nodes
        self.by_id = {node.id: node for node in nodes}
        self.size = sum(node.size for node in nodes)
        largest = max((node.size for node in nodes), default=0)
        self.buckets: list[list[int]] = [[] for _ in range(largest + 1)]
        self.open_total = 0
        self.leaving_total = 0
        for node in nodes:
            if node.accepting:
                self.buckets[len(node.open)].append(node.rank)
                self.open_total += len(node.open)
        self.shapes = _largest_first(nodes)
        self.accepting_shapes = _largest_first([node for node in nodes if node.accepting])
        self.limits_cpu = any(node.cpu.size < math.inf for node in nodes)
        self.limits_memory = any(node.memory.size < math.inf for node in nodes)

    def _reopen(self, node: NodeState, before: int) -> None:
        after = len(node.open)
        if not node.accepting or after == before:
            return
        bucket = self.buckets[before]
        del bucket[bisect_left(bucket, node.rank)]
        insort(self.buckets[after], node.rank)
        self.open_total += after - before

    def take(self, node: NodeState, gpus: tuple[int, ...], cpus: float, memory: float) -> None:
        """A rank starts on ``gpus`` (open GPUs, or idle reserved ones for short backfill)."""
        before = len(node.open)
        node.free.difference_update(gpus)
        node.open.difference_update(gpus)
        node.cpu.take(cpus)
        node.memory.take(memory)
        self._reopen(node, before)

    def claim(self, node: NodeState, gpus: tuple[int, ...], cpus: float, memory: float) -> None:
        """Promise ``gpus`` (idle or leaving), cores and memory to a job that starts once
        preempted jobs stop."""
        before = len(node.open)
        for gpu in gpus:
            node.claimed.add(gpu)
            node.open.discard(gpu)
            if node.leaving.pop(gpu, None) is not None:
                self.leaving_total -= 1
        node.cpu.claim(cpus)
        node.memory.claim(memory)
        self._reopen(node, before)

    def reserve(self, node: NodeState, gpus: tuple[int, ...], cpus: float, memory: float) -> None:
        """Hold ``gpus`` (idle or busy), cores and memory for the pool's reservation."""
        before = len(node.open)
        node.reserved.update(gpus)
        node.open.difference_update(gpus)
        node.cpu.reserve(cpus)
        node.memory.reserve(memory)
        self._reopen(node, before)

    def mark_leaving(self, job: RunningState) -> None:
        """``job`` is being stopped: its GPUs, cores and memory will be free soon."""
        job.leaving = True
        cpus, memory = job.cpus, job.memory
        for node, gpus in job.parts:
            for gpu in gpus:
                if gpu not in node.claimed and gpu not in node.leaving:
                    node.leaving[gpu] = job.job.id
                    self.leaving_total += 1
            node.cpu.release(cpus)
            node.memory.release(memory)

    def largest_open(self) -> int:
        """The most open GPUs on one accepting node."""
        for count in range(len(self.buckets) - 1, 0, -1):
            if self.buckets[count]:
                return count
        return 0

    def nodes_with_open(self, gpus: int) -> int:
        """How many accepting nodes have at least ``gpus`` open GPUs."""
        return sum(len(bucket) for bucket in self.buckets[gpus:])

    def nodes_able(
        self,
        gpus: int,
        cpus: float,
        memory: float,
        avoid: frozenset[int],
        *,
        accepting: bool,
        needed: int | None = None,
    ) -> int:
        """How many nodes (accepting ones only, if asked) have ``gpus`` GPUs, ``cpus`` cores
        and ``memory`` in all, outside ``avoid``; past ``needed``, a lower bound."""
        stop = math.inf if needed is None else needed + len(avoid)
        count = 0
        for size, cores, mb, number in self.accepting_shapes if accepting else self.shapes:
            if size >= gpus and cores >= cpus and mb >= memory:
                count += number
                if count >= stop:
                    break
        if avoid and count:
            for node_id in avoid:
                node = self.by_id.get(node_id)
                if (
                    node
                    and node.size >= gpus
                    and node.cpu.size >= cpus
                    and node.memory.size >= memory
                    and (node.accepting or not accepting)
                ):
                    count -= 1
        return count
