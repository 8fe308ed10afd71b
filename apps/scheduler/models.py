"""Pools, quotas, jobs, their allocations and their timeline.

A pool is a named set of nodes; every node is in exactly one pool (``NodeSchedule``, the
scheduler's side of a monitoring ``Node``). Quotas give a workspace guaranteed and
maximum GPUs per pool. A job asks for ``nodes`` x ``gpus_per_node`` GPUs in one pool;
each attempt to run it gets one ``Allocation`` per rank (node and GPU indices), and
every transition is a ``JobEvent`` with its reason and actor. A pending job's place in
the queue and why it waits change with every pass; they live in Redis (``queue``).
"""

from django.conf import settings
from django.db import models
from django.db.models import Q


class Pool(models.Model):
    """A named set of nodes, usually of one GPU type; new nodes join the default pool."""

    name = models.CharField(max_length=64, unique=True)
    description = models.CharField(max_length=200, blank=True)
    is_default = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=Q(is_default=True), name="pool_one_default"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class NodeSchedule(models.Model):
    """The scheduler's view of a node: its pool, whether it takes jobs, GPUs taken out."""

    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        CORDONED = "cordoned", "Cordoned"  # no new jobs; running jobs carry on
        DRAINING = "draining", "Draining"  # no new jobs; running jobs are requeued

    node = models.OneToOneField(
        "monitoring.Node", on_delete=models.CASCADE, primary_key=True, related_name="schedule"
    )
    pool = models.ForeignKey(Pool, on_delete=models.PROTECT, related_name="nodes")
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE)
    state_reason = models.CharField(max_length=200, blank=True)
    # GPU indices an operator took out of service.
    gpus_out = models.JSONField(default=list, blank=True)
    # Epoch seconds of recent failures (node lost); too many in a window hold it out.
    failures = models.JSONField(default=list, blank=True)
    held_until = models.DateTimeField(null=True, blank=True)
    # GPU indices joined by NVLink, worked out from the GPUs the agent reported when it
    # connected at ``topology_at`` (the node's ``connected_at``); redone after a reconnect.
    nvlink_groups = models.JSONField(default=list, blank=True)
    # CPU cores and memory the node offers to jobs, from the same report.
    cpus = models.FloatField(null=True, blank=True)
    memory_mb = models.PositiveIntegerField(null=True, blank=True)
    topology_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.node} in {self.pool}"


class Quota(models.Model):
    """What one workspace may use of one pool."""

    workspace = models.ForeignKey(
        "accounts.Workspace", on_delete=models.CASCADE, related_name="quotas"
    )
    pool = models.ForeignKey(Pool, on_delete=models.CASCADE, related_name="quotas")
    guaranteed = models.PositiveIntegerField(default=0)
    maximum = models.PositiveIntegerField()
    weight = models.FloatField(default=1.0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["pool__name", "workspace__name"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "pool"], name="quota_workspace_pool"),
            models.CheckConstraint(
                condition=Q(maximum__gte=models.F("guaranteed")), name="quota_max_ge_guaranteed"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.workspace} in {self.pool}: {self.guaranteed}/{self.maximum}"


class Priority(models.TextChoices):
    """Priority classes, lowest first; the engine compares their ranks."""

    LOW = "low", "Low"
    NORMAL = "normal", "Normal"
    HIGH = "high", "High"
    URGENT = "urgent", "Urgent"


class Job(models.Model):
    """A command to run on ``nodes`` x ``gpus_per_node`` GPUs of one pool."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        HELD = "held", "Held"
        SCHEDULED = "scheduled", "Scheduled"  # placed; start commands going out
        STARTING = "starting", "Starting"  # commands sent; waiting for every rank to start
        RUNNING = "running", "Running"
        PREEMPTING = "preempting", "Preempting"  # stopping, then back to the queue
        STOPPING = "stopping", "Stopping"  # stopping, then cancelled or failed
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Kind(models.TextChoices):
        """How the command runs on each node."""

        COMMAND = "command", "Command"  # the command itself, once per process slot
        TORCHRUN = "torchrun", "torchrun"  # torchrun starts the processes of each node

    class Intent(models.TextChoices):
        """What happens once a stopping attempt's processes have all exited."""

        NONE = "", "None"
        REQUEUE = "requeue", "Requeue"
        HOLD = "hold", "Hold"
        CANCEL = "cancel", "Cancel"
        FAIL = "fail", "Fail"

    workspace = models.ForeignKey(
        "accounts.Workspace", on_delete=models.CASCADE, related_name="jobs"
    )
    pool = models.ForeignKey(Pool, on_delete=models.PROTECT, related_name="jobs")
    name = models.CharField(max_length=128)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.COMMAND)
    command = models.TextField()
    env = models.JSONField(default=dict, blank=True)
    # Processes per node (torchrun's --nproc-per-node); empty: one per GPU for torchrun,
    # one for a command.
    procs_per_node = models.PositiveSmallIntegerField(null=True, blank=True)
    # Resume a requeued attempt from the newest complete checkpoint (PODIUM_RESUME_FROM).
    resume = models.BooleanField(default=True)
    # Complete checkpoints kept (older ones are pruned unless pinned); empty: the default.
    checkpoint_keep = models.PositiveSmallIntegerField(null=True, blank=True)
    # What the current attempt was started with beyond the job's own env: rendezvous,
    # checkpoint directory, resume point, dataset paths. Rewritten when an attempt is placed.
    launch_env = models.JSONField(default=dict, blank=True)
    workdir = models.CharField(max_length=1024, blank=True)
    nodes = models.PositiveSmallIntegerField(default=1)
    gpus_per_node = models.PositiveSmallIntegerField(default=1)
    cpus = models.FloatField(null=True, blank=True)  # CPU cores per node
    memory_mb = models.PositiveIntegerField(null=True, blank=True)  # memory per node
    priority = models.CharField(max_length=16, choices=Priority.choices, default=Priority.NORMAL)
    # Queue order within a priority: the submit time, or a position an admin set.
    queue_order = models.FloatField()
    max_restarts = models.PositiveSmallIntegerField(default=3)
    restarts = models.PositiveSmallIntegerField(default=0)  # own failures used so far
    attempt = models.PositiveIntegerField(default=0)  # attempts started so far
    grace_seconds = models.FloatField(default=60.0)
    max_duration = models.FloatField(null=True, blank=True)  # seconds per attempt
    hang_timeout = models.FloatField(null=True, blank=True)  # seconds without output
    avoid_nodes = models.JSONField(default=list, blank=True)  # node ids that failed it

    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    state_reason = models.CharField(max_length=300, blank=True)
    intent = models.CharField(max_length=16, choices=Intent.choices, blank=True, default="")
    stop_deadline = models.DateTimeField(null=True, blank=True)  # SIGKILL after this
    exit_code = models.IntegerField(null=True, blank=True)

    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    scheduled_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)  # the current attempt's start
    last_output_at = models.DateTimeField(null=True, blank=True)
    last_checkpoint_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["state", "pool"], name="job_state_pool"),
            models.Index(fields=["workspace", "state"], name="job_workspace_state"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(nodes__gte=1), name="job_nodes_positive"),
            models.CheckConstraint(condition=Q(gpus_per_node__gte=1), name="job_gpus_positive"),
        ]

    def __str__(self) -> str:
        return f"job {self.pk} {self.name}"

    @property
    def gpus(self) -> int:
        """GPUs the job holds when placed."""
        return self.nodes * self.gpus_per_node

    @property
    def nproc_per_node(self) -> int:
        """Processes each node runs: as asked, else one per GPU (torchrun) or one."""
        if self.procs_per_node:
            return self.procs_per_node
        return self.gpus_per_node if self.kind == self.Kind.TORCHRUN else 1


class Allocation(models.Model):
    """One rank of one attempt: the node and GPUs it runs on, and how it ended."""

    class State(models.TextChoices):
        STARTING = "starting", "Starting"
        RUNNING = "running", "Running"
        EXITED = "exited", "Exited"
        LOST = "lost", "Lost"  # its node was lost or its agent no longer knew it

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="allocations")
    attempt = models.PositiveIntegerField()
    rank = models.PositiveSmallIntegerField()
    node = models.ForeignKey(
        "monitoring.Node", on_delete=models.CASCADE, related_name="allocations"
    )
    gpus = models.JSONField(default=list)
    state = models.CharField(max_length=16, choices=State.choices, default=State.STARTING)
    pid = models.PositiveIntegerField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    signal = models.IntegerField(null=True, blank=True)
    exit_reason = models.CharField(max_length=300, blank=True)
    tail = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job", "attempt", "rank"]
        constraints = [
            models.UniqueConstraint(
                fields=["job", "attempt", "rank"], name="allocation_job_attempt_rank"
            ),
        ]
        indexes = [models.Index(fields=["node", "state"], name="allocation_node_state")]

    def __str__(self) -> str:
        return f"job {self.job_id} attempt {self.attempt} rank {self.rank}"

    @property
    def active(self) -> bool:
        """Whether its process may still run."""
        return self.state in (self.State.STARTING, self.State.RUNNING)


class JobEvent(models.Model):
    """One line of a job's timeline."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(auto_now_add=True)
    attempt = models.PositiveIntegerField(default=0)
    kind = models.CharField(max_length=32)
    from_state = models.CharField(max_length=16, blank=True)
    to_state = models.CharField(max_length=16, blank=True)
    reason = models.CharField(max_length=500, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["job", "at"], name="jobevent_job_at")]

    def __str__(self) -> str:
        return f"job {self.job_id}: {self.kind}"
