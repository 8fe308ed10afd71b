"""Nodes, their GPUs, telemetry, health events and alert delivery.

A node belongs to the whole cluster (``workspace`` empty: every signed-in user sees
it) or is dedicated to one workspace (only its members and platform admins see it).
Telemetry timestamps are float epoch seconds, as the agent sends them, so rollup
buckets are plain arithmetic on every database.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q


class Health(models.TextChoices):
    """A GPU's or node's health, derived from its open events."""

    HEALTHY = "healthy", "Healthy"
    DEGRADED = "degraded", "Degraded"
    UNHEALTHY = "unhealthy", "Unhealthy"


class JoinToken(models.Model):
    """A token an admin hands to new nodes; nodes trade it for their own node token."""

    name = models.CharField(max_length=100)
    workspace = models.ForeignKey(
        "accounts.Workspace",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="join_tokens",
        help_text="Nodes joining with this token are dedicated to this workspace; empty: shared.",
    )
    prefix = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    max_uses = models.PositiveIntegerField(null=True, blank=True)
    uses = models.PositiveIntegerField(default=0)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class Node(models.Model):
    """A machine running ``podium agent``."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"  # joined, not yet heard from
        READY = "ready", "Ready"
        SUSPECT = "suspect", "Suspect"  # no heartbeat for NODE_SUSPECT_AFTER seconds
        LOST = "lost", "Lost"  # no heartbeat for NODE_LOST_AFTER seconds
        REVOKED = "revoked", "Revoked"

    name = models.CharField(max_length=128)
    machine_id = models.CharField(max_length=64, blank=True)
    workspace = models.ForeignKey(
        "accounts.Workspace",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="nodes",
    )
    join_token = models.ForeignKey(
        JoinToken, null=True, blank=True, on_delete=models.SET_NULL, related_name="nodes"
    )
    token_prefix = models.CharField(max_length=16, unique=True, null=True, blank=True)
    token_digest = models.CharField(max_length=64, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    state_changed_at = models.DateTimeField(null=True, blank=True)
    health = models.CharField(max_length=16, choices=Health.choices, default=Health.HEALTHY)
    simulated = models.BooleanField(default=False)
    # Backend the agent samples with: "nvml", "simulated" or "none" (no driver).
    gpu_backend = models.CharField(max_length=16, blank=True)
    # What the agent says about the GPU driver, e.g. "no NVIDIA driver found".
    gpu_status = models.CharField(max_length=200, blank=True)
    # hostname, cpu_model, cpu_count, memory_total, os, kernel, driver_version, cuda_version,
    # agent_version, python: as the agent reported them in its hello.
    facts = models.JSONField(default=dict, blank=True)
    # The most GPUs this node has shown; fewer visible later means one fell off the bus.
    expected_gpus = models.PositiveSmallIntegerField(default=0)
    agent_version = models.CharField(max_length=32, blank=True)
    address = models.GenericIPAddressField(null=True, blank=True)
    # Agent clock minus console clock, measured with a round trip; None until measured.
    clock_skew_ms = models.FloatField(null=True, blank=True)
    joined_at = models.DateTimeField(auto_now_add=True)
    connected_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["name"], condition=Q(revoked_at__isnull=True), name="node_name_unique_live"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Gpu(models.Model):
    """One GPU of a node, as the agent last described it."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="gpus")
    index = models.PositiveSmallIntegerField()
    uuid = models.CharField(max_length=96, blank=True)
    name = models.CharField(max_length=128, blank=True)
    serial = models.CharField(max_length=64, blank=True)
    memory_total_mib = models.PositiveIntegerField(null=True, blank=True)
    pci_bus_id = models.CharField(max_length=32, blank=True)
    nvlink_peers = models.JSONField(default=list, blank=True)  # UUIDs of NVLink peers
    simulated = models.BooleanField(default=False)
    present = models.BooleanField(default=True)  # False once it stopped being visible
    health = models.CharField(max_length=16, choices=Health.choices, default=Health.HEALTHY)

    class Meta:
        ordering = ["node__name", "index"]
        constraints = [
            models.UniqueConstraint(fields=["node", "index"], name="gpu_node_index_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.node.name}/gpu{self.index}"


class GpuSample(models.Model):
    """One raw GPU sample. Every reading is nullable: missing is not zero."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="+")
    gpu_index = models.PositiveSmallIntegerField()
    ts = models.FloatField()
    util = models.FloatField(null=True)  # %
    mem_util = models.FloatField(null=True)  # memory-controller busy %
    mem_used_mib = models.FloatField(null=True)
    mem_total_mib = models.FloatField(null=True)
    temp_c = models.FloatField(null=True)
    power_w = models.FloatField(null=True)
    power_limit_w = models.FloatField(null=True)
    sm_clock_mhz = models.FloatField(null=True)
    throttle = models.BigIntegerField(null=True)  # clock-event reason bitmask
    ecc_sbe = models.BigIntegerField(null=True)  # volatile single-bit errors
    ecc_dbe = models.BigIntegerField(null=True)  # volatile double-bit errors

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["node", "gpu_index", "ts"], name="gpusample_node_gpu_ts_unique"
            ),
        ]
        indexes = [models.Index(fields=["ts"], name="gpusample_ts")]

    def __str__(self) -> str:
        return f"node {self.node_id} gpu{self.gpu_index} @ {self.ts:.3f}"


class HostSample(models.Model):
    """One raw host sample of a node."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="+")
    ts = models.FloatField()
    cpu_percent = models.FloatField(null=True)
    mem_used_bytes = models.BigIntegerField(null=True)
    mem_total_bytes = models.BigIntegerField(null=True)
    load1 = models.FloatField(null=True)
    disk_used_bytes = models.BigIntegerField(null=True)
    disk_total_bytes = models.BigIntegerField(null=True)
    net_rx_bps = models.FloatField(null=True)
    net_tx_bps = models.FloatField(null=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["node", "ts"], name="hostsample_node_ts_unique"),
        ]
        indexes = [models.Index(fields=["ts"], name="hostsample_ts")]

    def __str__(self) -> str:
        return f"node {self.node_id} host @ {self.ts:.3f}"


class GpuRollup(models.Model):
    """Min/avg/max of a GPU's readings over one bucket (60 s or 3600 s)."""

    MINUTE = 60
    HOUR = 3600

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="+")
    gpu_index = models.PositiveSmallIntegerField()
    resolution = models.PositiveIntegerField()  # seconds: MINUTE or HOUR
    bucket = models.FloatField()  # epoch seconds at the bucket's start
    samples = models.PositiveIntegerField(default=0)
    util_min = models.FloatField(null=True)
    util_avg = models.FloatField(null=True)
    util_max = models.FloatField(null=True)
    mem_used_min = models.FloatField(null=True)
    mem_used_avg = models.FloatField(null=True)
    mem_used_max = models.FloatField(null=True)
    temp_min = models.FloatField(null=True)
    temp_avg = models.FloatField(null=True)
    temp_max = models.FloatField(null=True)
    power_min = models.FloatField(null=True)
    power_avg = models.FloatField(null=True)
    power_max = models.FloatField(null=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["node", "gpu_index", "resolution", "bucket"],
                name="gpurollup_unique",
            ),
        ]
        indexes = [models.Index(fields=["resolution", "bucket"], name="gpurollup_res_bucket")]

    def __str__(self) -> str:
        return f"node {self.node_id} gpu{self.gpu_index} {self.resolution}s @ {self.bucket:.0f}"


class HealthEvent(models.Model):
    """Something a health rule saw on a node or one of its GPUs.

    Open while ``resolved_at`` is empty. Fatal classes keep a GPU or node out of
    service until an operator marks it back in service; watch events resolve when
    their condition clears or when acknowledged.
    """

    class Severity(models.TextChoices):
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        CRITICAL = "critical", "Critical"

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="events")
    gpu_index = models.PositiveSmallIntegerField(null=True, blank=True)
    # Where the rule's input came from: xid, ecc, thermal, power, pcie, nvlink, remap,
    # recovery, bus, heartbeat, agent.
    source = models.CharField(max_length=16)
    code = models.CharField(max_length=32, blank=True)  # e.g. the XID number
    # Rule class from the health table: application, watch, gpu_reset, node_reboot,
    # replace, disputed, unknown, state.
    rule_class = models.CharField(max_length=16)
    severity = models.CharField(max_length=16, choices=Severity.choices)
    reason = models.CharField(max_length=300)
    action = models.CharField(max_length=300, blank=True)
    count = models.PositiveIntegerField(default=1)
    first_at = models.DateTimeField()
    last_at = models.DateTimeField()
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-last_at", "-id"]
        indexes = [
            models.Index(fields=["node", "resolved_at"], name="event_node_open"),
            models.Index(fields=["-last_at"], name="event_last_at"),
        ]

    def __str__(self) -> str:
        where = f"gpu{self.gpu_index}" if self.gpu_index is not None else "node"
        return f"{self.node.name} {where}: {self.reason}"


class AlertChannel(models.Model):
    """A webhook that receives events at or above a severity."""

    name = models.CharField(max_length=100)
    url = models.URLField(max_length=500)
    # HMAC-SHA256 signing secret, encrypted at rest (apps.system.crypto); empty: unsigned.
    secret_encrypted = models.TextField(blank=True)
    min_severity = models.CharField(
        max_length=16, choices=HealthEvent.Severity.choices, default=HealthEvent.Severity.WARNING
    )
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class AlertDelivery(models.Model):
    """One event sent (or being sent) to one channel."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Failed"

    event = models.ForeignKey(HealthEvent, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.ForeignKey(AlertChannel, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.CharField(max_length=300, blank=True)
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["event", "channel"], name="delivery_unique"),
        ]

    def __str__(self) -> str:
        return f"event {self.event_id} → {self.channel_id}: {self.status}"
