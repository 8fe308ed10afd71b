"""The mutable state of one pool during a pass: who holds which GPU, and what is still open.

Every node tracks its GPUs as free (idle and schedulable), claimed (promised to a job that
waits for preempted jobs to stop), reserved (held for the pool's reservation) and leaving
(held by a job that is being stopped). ``open`` = free - claimed - reserved is what an
ordinary placement may use; accepting nodes are indexed by their open count so that a
placement looks at a handful of buckets instead of every node.
"""

import re
from bisect import bisect_left, insort

from apps.scheduler.engine.snapshot import NodeView, RunningJob

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[str | int, ...]:
    """Sort key that orders ``node-2`` before ``node-10``."""
    return tuple(int(part) if i % 2 else part for i, part in enumerate(_DIGITS.split(name)))


class RunningState:
    """A running job as the pass sees it: its cost if stopped, and whether it is leaving."""

    __slots__ = ("borrowing", "cost", "job", "leaving", "parts")

    def __init__(self, job: RunningJob, now: float) -> None:
        self.job = job
        since = job.last_checkpoint_at if job.last_checkpoint_at is not None else job.started_at
        self.cost = max(0.0, now - since) * job.gpus
        self.borrowing = False
        self.leaving = not job.preemptible
        self.parts: list[tuple[NodeState, tuple[int, ...]]] = []


class NodeState:
    """One node of the pool, with its GPUs split by what they may be used for."""

    __slots__ = (
        "accepting",
        "claimed",
        "free",
        "gpus",
        "groups",
        "holders",
        "id",
        "leaving",
        "name",
        "open",
        "pool_id",
        "rank",
        "reserved",
        "size",
    )

    def __init__(self, view: NodeView, rank: int, held: set[int]) -> None:
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
        self.sizes = sorted(node.size for node in nodes)
        self.accepting_sizes = sorted(node.size for node in nodes if node.accepting)

    def _reopen(self, node: NodeState, before: int) -> None:
        after = len(node.open)
        if not node.accepting or after == before:
            return
        bucket = self.buckets[before]
        del bucket[bisect_left(bucket, node.rank)]
        insort(self.buckets[after], node.rank)
        self.open_total += after - before

    def take(self, node: NodeState, gpus: tuple[int, ...]) -> None:
        """A placement starts on ``gpus`` (open GPUs, or idle reserved ones for short backfill)."""
        before = len(node.open)
        node.free.difference_update(gpus)
        node.open.difference_update(gpus)
        self._reopen(node, before)

    def claim(self, node: NodeState, gpus: tuple[int, ...]) -> None:
        """Promise ``gpus`` (idle or leaving) to a job that starts once preempted jobs stop."""
        before = len(node.open)
        for gpu in gpus:
            node.claimed.add(gpu)
            node.open.discard(gpu)
            if node.leaving.pop(gpu, None) is not None:
                self.leaving_total -= 1
        self._reopen(node, before)

    def reserve(self, node: NodeState, gpus: tuple[int, ...]) -> None:
        """Hold ``gpus`` (idle or busy) for the pool's reservation."""
        before = len(node.open)
        node.reserved.update(gpus)
        node.open.difference_update(gpus)
        self._reopen(node, before)

    def mark_leaving(self, job: RunningState) -> None:
        """``job`` is being stopped: its GPUs will be free soon."""
        job.leaving = True
        for node, gpus in job.parts:
            for gpu in gpus:
                if gpu not in node.claimed and gpu not in node.leaving:
                    node.leaving[gpu] = job.job.id
                    self.leaving_total += 1

    def largest_open(self) -> int:
        """The most open GPUs on one accepting node."""
        for count in range(len(self.buckets) - 1, 0, -1):
            if self.buckets[count]:
                return count
        return 0

    def nodes_with_open(self, gpus: int) -> int:
        """How many accepting nodes have at least ``gpus`` open GPUs."""
        return sum(len(bucket) for bucket in self.buckets[gpus:])

    def nodes_of_size(self, gpus: int, avoid: frozenset[int], *, accepting: bool) -> int:
        """How many nodes (accepting ones only, if asked) have ``gpus`` GPUs, outside ``avoid``."""
        sizes = self.accepting_sizes if accepting else self.sizes
        count = len(sizes) - bisect_left(sizes, gpus)
        if avoid and count:
            for node_id in avoid:
                node = self.by_id.get(node_id)
                if node and node.size >= gpus and (node.accepting or not accepting):
                    count -= 1
        return count
