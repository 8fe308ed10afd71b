"""What the engine sees: the nodes of every pool, the jobs holding GPUs, the queue and the quotas.

A snapshot is a frozen picture taken by the Django side at the start of a pass. The engine
reads nothing else: no clock (``Snapshot.now`` is the time of the pass), no database.
"""

from dataclasses import dataclass

PRIORITIES: dict[str, int] = {"low": 0, "normal": 1, "high": 2, "urgent": 3}

Slots = tuple[tuple[int, tuple[int, ...]], ...]


@dataclass(frozen=True)
class NodeView:
    """A node of a pool and the GPUs on it that may be scheduled.

    ``cpus`` (cores) and ``memory_mb`` are what the node offers to jobs; None: not limited.
    """

    id: int
    name: str
    pool_id: int
    gpus: tuple[int, ...]
    nvlink_groups: tuple[frozenset[int], ...] = ()
    accepting: bool = True
    cpus: float | None = None
    memory_mb: int | None = None


@dataclass(frozen=True)
class RunningJob:
    """A job holding GPUs: scheduled, starting, running or preempting.

    Every rank (slot) holds ``cpus`` cores and ``memory_mb`` of memory on its node.
    """

    id: int
    workspace_id: int
    pool_id: int
    priority: int
    slots: Slots
    started_at: float
    last_checkpoint_at: float | None = None
    ends_by: float | None = None
    preemptible: bool = True
    cpus: float = 0.0
    memory_mb: int = 0

    @property
    def gpus(self) -> int:
        """GPUs held, over all ranks."""
        return sum(len(gpus) for _, gpus in self.slots)


@dataclass(frozen=True)
class PendingJob:
    """A job waiting in its pool's queue for ``nodes`` x ``gpus_per_node`` GPUs.

    Every rank also needs ``cpus`` cores and ``memory_mb`` of memory free on its node.
    """

    id: int
    workspace_id: int
    pool_id: int
    priority: int
    nodes: int
    gpus_per_node: int
    order: float
    max_duration: float | None = None
    avoid_nodes: frozenset[int] = frozenset()
    cpus: float = 0.0
    memory_mb: int = 0

    @property
    def gpus(self) -> int:
        """GPUs asked for, over all ranks."""
        return self.nodes * self.gpus_per_node


@dataclass(frozen=True)
class Quota:
    """A workspace's share of a pool: GPUs always available to it, and never more than."""

    workspace_id: int
    pool_id: int
    guaranteed: int
    maximum: int
    weight: float = 1.0


@dataclass(frozen=True)
class Snapshot:
    """Everything one pass decides from.

    A workspace with no Quota row for a pool has no guarantee there and may borrow up to
    the pool's size.
    """

    now: float
    nodes: tuple[NodeView, ...]
    running: tuple[RunningJob, ...]
    pending: tuple[PendingJob, ...]
    quotas: tuple[Quota, ...]
