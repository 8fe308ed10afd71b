"""API shapes for nodes, GPUs, telemetry history, events, join tokens and alert channels."""

from datetime import datetime
from typing import Any

from ninja import Field, Schema

from apps.monitoring.models import Health, HealthEvent, Node


class NodeFilterIn(Schema):
    state: Node.State | None = None
    health: Health | None = None
    workspace_id: int | None = None
    shared: bool = False
    search: str | None = Field(None, max_length=128)


class NodeOut(Schema):
    id: int
    name: str
    workspace_id: int | None
    state: Node.State
    health: Health
    simulated: bool
    gpu_backend: str
    gpu_status: str
    agent_version: str
    gpu_count: int = 0
    unhealthy_gpu_count: int = 0
    last_seen_at: datetime | None
    joined_at: datetime
    revoked_at: datetime | None


class GpuReadingOut(Schema):
    util: float | None = None
    mem_used_pct: float | None = None
    temp_c: float | None = None
    power_w: float | None = None


class GpuOut(Schema):
    index: int
    uuid: str
    name: str
    serial: str
    memory_total_mib: int | None
    pci_bus_id: str
    nvlink_peers: list[str]
    simulated: bool
    present: bool
    health: Health
    latest: GpuReadingOut | None = None


class HostReadingOut(Schema):
    cpu: float | None = None
    mem_pct: float | None = None


class HostSampleOut(Schema):
    """The latest stored host sample: every host reading the agent sends."""

    ts: float
    cpu_percent: float | None = None
    mem_used_bytes: int | None = None
    mem_total_bytes: int | None = None
    load1: float | None = None
    disk_used_bytes: int | None = None
    disk_total_bytes: int | None = None
    net_rx_bps: float | None = None
    net_tx_bps: float | None = None


class NodeDetailOut(NodeOut):
    machine_id: str
    facts: dict[str, Any]
    expected_gpus: int
    address: str | None
    clock_skew_ms: float | None
    connected_at: datetime | None
    state_changed_at: datetime | None
    heartbeat_age_seconds: float | None = None
    rejected_messages: int = 0
    live: bool = Field(False, description="Whether a live summary of the node was found.")
    host: HostReadingOut | None = None
    host_sample: HostSampleOut | None = None
    power_w: float | None = None
    gpus: list[GpuOut]


class NodePatch(Schema):
    name: str | None = Field(None, max_length=128)
    workspace_id: int | None = Field(
        None, description="The workspace the node is dedicated to; null makes it shared."
    )


class HistoryOut(Schema):
    range: str
    resolution: str = Field(..., description='"raw", "1m" or "1h".')
    since: float
    until: float
    points: list[dict[str, Any]]


class FaultIn(Schema):
    fault: str = Field(..., max_length=32, description="One of the simulated faults.")
    code: int | None = Field(None, description="The XID code, for fault=xid.")


class FaultOut(Schema):
    id: str = Field(..., description="The command id the agent answers with.")


class EventFilterIn(Schema):
    node_id: int | None = None
    gpu_index: int | None = Field(None, ge=0)
    severity: HealthEvent.Severity | None = None
    status: str | None = Field(None, pattern="^(open|unacknowledged|acknowledged|resolved)$")
    source: str | None = Field(None, max_length=16)
    since: datetime | None = None


class EventOut(Schema):
    id: int
    node_id: int
    node_name: str = Field(..., alias="node.name")
    gpu_index: int | None
    source: str
    code: str
    rule_class: str
    severity: HealthEvent.Severity
    reason: str
    action: str
    count: int
    first_at: datetime
    last_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None = None
    resolved_at: datetime | None
    resolved_by: str | None = None

    @staticmethod
    def resolve_acknowledged_by(obj: HealthEvent) -> str | None:
        return obj.acknowledged_by.username if obj.acknowledged_by else None

    @staticmethod
    def resolve_resolved_by(obj: HealthEvent) -> str | None:
        return obj.resolved_by.username if obj.resolved_by else None


class JoinTokenIn(Schema):
    name: str = Field(..., max_length=100)
    workspace_id: int | None = None
    expires_in_hours: int | None = Field(None, ge=1, le=24 * 365)
    max_uses: int | None = Field(None, ge=1)


class JoinTokenOut(Schema):
    id: int
    name: str
    workspace_id: int | None
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    max_uses: int | None
    uses: int
    last_used_at: datetime | None
    revoked_at: datetime | None


class JoinTokenCreatedOut(JoinTokenOut):
    token: str = Field(..., description="The secret, shown this once only.")
    command: str = Field(..., description="The command to run on the node.")


class AlertChannelIn(Schema):
    name: str = Field(..., max_length=100)
    url: str = Field(..., max_length=500)
    secret: str = Field("", max_length=200)
    min_severity: HealthEvent.Severity = HealthEvent.Severity.WARNING
    enabled: bool = True


class AlertChannelPatch(Schema):
    name: str | None = Field(None, max_length=100)
    url: str | None = Field(None, max_length=500)
    secret: str | None = Field(None, max_length=200, description='"" removes the secret.')
    min_severity: HealthEvent.Severity | None = None
    enabled: bool | None = None


class AlertChannelOut(Schema):
    id: int
    name: str
    url: str
    signed: bool
    min_severity: HealthEvent.Severity
    enabled: bool
    created_at: datetime

    @staticmethod
    def resolve_signed(obj: Any) -> bool:
        return bool(obj.secret_encrypted)


class DeliveryOut(Schema):
    id: int
    event_id: int
    channel_id: int
    channel_name: str = Field(..., alias="channel.name")
    node_name: str = Field(..., alias="event.node.name")
    status: str
    attempts: int
    last_error: str
    response_code: int | None
    created_at: datetime
    delivered_at: datetime | None
