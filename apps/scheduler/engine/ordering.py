"""The order of a pool's queue: priority, then guarantees, then weighted fair share.

Within a priority class, the next job comes from the workspace that is still under its
guarantee (before those already at or above it), then from the one using the fewest GPUs per
unit of weight, then by queue order and id. Usage is read afresh after every job, so a
workspace that just got GPUs yields to the others.
"""

import heapq
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from apps.scheduler.engine.snapshot import PendingJob


@dataclass(frozen=True)
class Share:
    """A workspace's quota in one pool, with the defaults for workspaces without a row."""

    guaranteed: int
    maximum: int
    weight: float


def fair_order(
    jobs: list[PendingJob], usage: dict[int, int], share: Callable[[int], Share]
) -> Iterator[PendingJob]:
    """Yield ``jobs`` in the engine's order; ``usage`` may change between two jobs."""
    levels: dict[int, dict[int, list[PendingJob]]] = defaultdict(lambda: defaultdict(list))
    for job in jobs:
        levels[job.priority][job.workspace_id].append(job)

    def key(workspace: int, head: PendingJob) -> tuple[int, float, float, int, int]:
        quota = share(workspace)
        used = usage.get(workspace, 0)
        return (
            0 if used < quota.guaranteed else 1,
            used / quota.weight,
            head.order,
            head.id,
            workspace,
        )

    for priority in sorted(levels, reverse=True):
        queues = {
            workspace: deque(sorted(waiting, key=lambda job: (job.order, job.id)))
            for workspace, waiting in levels[priority].items()
        }
        heap = [key(workspace, queue[0]) for workspace, queue in queues.items()]
        heapq.heapify(heap)
        while heap:
            workspace = heapq.heappop(heap)[4]
            queue = queues[workspace]
            yield queue.popleft()
            if queue:
                heapq.heappush(heap, key(workspace, queue[0]))
