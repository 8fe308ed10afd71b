"""API shapes for jobs, their timeline, pools, quotas and the scheduling side of nodes."""

from datetime import datetime
from typing import Any

from ninja import Field, Schema

from apps.scheduler.models import Allocation, Job, NodeSchedule, Priority


class JobIn(Schema):
    workspace_id: int
    name: str
    command: str = Field(
        ..., description="A shell command; for torchrun, the training script and its arguments."
    )
    kind: str = Field(Job.Kind.COMMAND, description="command or torchrun.")
    procs_per_node: int | None = Field(
        None, description="Processes per node; empty: one per GPU (torchrun) or one."
    )
    nodes: int = 1
    gpus_per_node: int = 1
    pool: str = Field("", description="The pool's name; empty: the default pool.")
    priority: str = Field(Priority.NORMAL, description="low, normal, high or urgent.")
    max_restarts: int | None = Field(None, description="Restarts after the job's own failures.")
    env: dict[str, Any] = Field(default_factory=dict)
    workdir: str = ""
    cpus: float | None = None
    memory_mb: int | None = None
    grace_seconds: float | None = Field(None, description="SIGTERM to SIGKILL, in seconds.")
    max_duration: float | None = Field(None, description="Seconds an attempt may run.")
    hang_timeout: float | None = Field(None, description="Seconds without output before a kill.")
    resume: bool = Field(True, description="Resume requeued attempts from the last checkpoint.")
    checkpoint_keep: int | None = Field(
        None, description="Complete checkpoints kept (pinned ones aside); empty: the default."
    )
    datasets: list[str] = Field(
        default_factory=list, description='Datasets to read: "name" (latest) or "name@version".'
    )


class JobFilterIn(Schema):
    workspace_id: int | None = None
    pool: str | None = Field(None, max_length=64, description="The pool's name.")
    state: list[str] = Field(
        default_factory=list, description="Repeat the parameter or separate states by commas."
    )
    q: str | None = Field(None, max_length=128, description="Part of the name or command.")


class QueueOut(Schema):
    position: int | None = None
    reason: str = ""
    estimated_start: datetime | None = None
    reserved: bool = False


class AllocationOut(Schema):
    rank: int
    node_id: int
    node: str
    gpus: list[int]
    state: Allocation.State
    pid: int | None
    exit_code: int | None


class JobOut(Schema):
    id: int
    workspace_id: int
    workspace: str
    name: str
    kind: Job.Kind
    command: str
    procs_per_node: int | None
    pool: str
    nodes: int
    gpus_per_node: int
    cpus: float | None
    memory_mb: int | None
    priority: Priority
    state: Job.State
    state_reason: str
    intent: str
    attempt: int
    restarts: int
    max_restarts: int
    exit_code: int | None
    env: dict[str, Any]
    workdir: str
    grace_seconds: float
    max_duration: float | None
    hang_timeout: float | None
    resume: bool
    checkpoint_keep: int | None
    launch_env: dict[str, str] = Field(
        default_factory=dict, description="What the current attempt was started with."
    )
    created_at: datetime
    scheduled_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    submitted_by: str | None
    queue: QueueOut | None = Field(
        None, description="Where a pending job waits and why, as the last pass left it."
    )
    allocation: list[AllocationOut] = Field(
        default_factory=list, description="The ranks of the current attempt."
    )


class JobEventOut(Schema):
    at: datetime
    attempt: int
    kind: str
    from_state: str
    to_state: str
    reason: str
    actor: str | None = None

    @staticmethod
    def resolve_actor(obj: Any) -> str | None:
        return obj.actor.username if obj.actor else None


class PriorityIn(Schema):
    priority: str


class MoveIn(Schema):
    position: str = Field("", description='"top" or "bottom"; or give ``before``.')
    before: int | None = Field(None, description="Move just before this waiting job.")


class WorkspaceUsageOut(Schema):
    workspace_id: int | None = Field(..., description="null: the other workspaces, summed.")
    name: str
    guaranteed: int
    maximum: int | None
    weight: float
    used: int
    borrowed: int
    pending: int


class PoolOut(Schema):
    id: int
    name: str
    description: str
    is_default: bool
    node_count: int
    gpus: int = Field(..., description="Schedulable GPUs of its live nodes.")
    used: int
    free: int
    out: int = Field(..., description="GPUs unhealthy or taken out of service.")
    pending_jobs: int
    workspaces: list[WorkspaceUsageOut]


class PoolIn(Schema):
    name: str = Field(..., max_length=64)
    description: str = Field("", max_length=200)


class PoolPatch(Schema):
    name: str | None = Field(None, max_length=64)
    description: str | None = Field(None, max_length=200)
    is_default: bool | None = Field(None, description="true makes it the pool new nodes join.")


class QuotaFilterIn(Schema):
    pool: str | None = Field(None, max_length=64, description="The pool's name.")
    workspace_id: int | None = None


class QuotaIn(Schema):
    workspace_id: int
    pool: str = Field(..., max_length=64, description="The pool's name.")
    guaranteed: int = 0
    maximum: int
    weight: float = 1.0


class QuotaOut(Schema):
    id: int
    workspace_id: int
    workspace: str = Field(..., alias="workspace.name")
    pool_id: int
    pool: str = Field(..., alias="pool.name")
    guaranteed: int
    maximum: int
    weight: float
    updated_at: datetime


class ReasonIn(Schema):
    reason: str = Field("", max_length=200)


class NodePoolIn(Schema):
    pool: str = Field(..., max_length=64, description="The pool's name.")


class NodeScheduleOut(Schema):
    node_id: int
    node: str = Field(..., alias="node.name")
    pool_id: int
    pool: str = Field(..., alias="pool.name")
    state: NodeSchedule.State
    state_reason: str
    gpus_out: list[int]
    held_until: datetime | None


class NodeAllocationOut(Schema):
    job_id: int
    job: str = Field(..., alias="job.name")
    workspace_id: int = Field(..., alias="job.workspace_id")
    workspace: str = Field(..., alias="job.workspace.name")
    attempt: int
    rank: int
    gpus: list[int]
    state: Allocation.State
    pid: int | None
    started_at: datetime | None
