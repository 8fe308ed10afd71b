"""REST endpoints: nodes and GPUs, telemetry history, events, join tokens, alert channels."""

from typing import Any

from django.http import HttpRequest
from ninja import Query, Router, Status
from ninja.pagination import LimitOffsetPagination, paginate

from apps.accounts.selectors import User, workspace_get
from apps.monitoring import selectors, services
from apps.monitoring.models import AlertChannel, AlertDelivery, HealthEvent, Node
from apps.monitoring.schemas import (
    AlertChannelIn,
    AlertChannelOut,
    AlertChannelPatch,
    DeliveryOut,
    EventFilterIn,
    EventOut,
    FaultIn,
    FaultOut,
    GpuOut,
    HistoryOut,
    JoinTokenCreatedOut,
    JoinTokenIn,
    JoinTokenOut,
    NodeDetailOut,
    NodeFilterIn,
    NodeOut,
    NodePatch,
)
from apps.system.pages import api_user

nodes_router = Router(tags=["nodes"])
events_router = Router(tags=["events"])
join_tokens_router = Router(tags=["join tokens"])
alerts_router = Router(tags=["alerts"])

RESOLUTION_NAMES = {selectors.RAW: "raw", 60: "1m", 3600: "1h"}
# Stored fields the node detail reads straight from the row; the rest is computed or live.
NODE_FIELDS = (
    "id", "name", "workspace_id", "state", "health", "simulated", "gpu_backend", "gpu_status",
    "agent_version", "last_seen_at", "joined_at", "revoked_at", "machine_id", "facts",
    "expected_gpus", "address", "clock_skew_ms", "connected_at", "state_changed_at",
)  # fmt: skip
GPU_FIELDS = (
    "index", "uuid", "name", "serial", "memory_total_mib", "pci_bus_id", "nvlink_peers",
    "simulated", "present", "health",
)  # fmt: skip


def _node_out(user: User, node_id: int) -> Node:
    """A node as the list shows it (with its GPU counts), after a change."""
    nodes = selectors.node_list(user=user, filters=selectors.NodeFilter())
    return nodes.filter(pk=node_id).first() or selectors.node_get(user=user, node_id=node_id)


# Nodes -------------------------------------------------------------------------------------


@nodes_router.get("", response=list[NodeOut])
@paginate(LimitOffsetPagination)
def node_list(request: HttpRequest, filters: Query[NodeFilterIn]) -> Any:
    """The nodes you can see, by name; revoked ones only with ``state=revoked``."""
    return selectors.node_list(
        user=api_user(request),
        filters=selectors.NodeFilter(
            state=filters.state,
            health=filters.health,
            workspace_id=filters.workspace_id,
            shared=filters.shared,
            search=filters.search,
        ),
    )


@nodes_router.get("/{int:node_id}", response=NodeDetailOut)
def node_detail(request: HttpRequest, node_id: int) -> dict:
    """One node: facts, state, heartbeat age, clock skew, GPUs with health and latest readings."""
    user = api_user(request)
    node = selectors.node_get(user=user, node_id=node_id)
    gpus = selectors.node_gpus(node=node)
    live = selectors.node_live(node_id=node.pk)
    summary = live.summary or {}
    return {
        **{f: getattr(node, f) for f in NODE_FIELDS},
        "gpu_count": len(gpus),
        "unhealthy_gpu_count": sum(g.health == "unhealthy" for g in gpus),
        "heartbeat_age_seconds": live.heartbeat_age(),
        "rejected_messages": live.rejected,
        "live": bool(summary),
        "host": summary.get("host"),
        "host_sample": selectors.host_sample_latest(node=node),
        "power_w": summary.get("power_w"),
        "gpus": [
            {
                **{f: getattr(g, f) for f in GPU_FIELDS},
                "latest": live.gpu_reading(g.index),
            }
            for g in gpus
        ],
    }


@nodes_router.get("/{int:node_id}/gpus/{int:index}/history", response=HistoryOut)
def gpu_history(request: HttpRequest, node_id: int, index: int, range: str = "1h") -> dict:
    """One GPU's readings over 15m, 1h (raw samples), 24h (minute rollups) or 7d (hour rollups)."""
    history = selectors.gpu_history(
        user=api_user(request), node_id=node_id, index=index, range=range
    )
    return {
        "range": history.range,
        "resolution": RESOLUTION_NAMES[history.resolution],
        "since": history.since,
        "until": history.until,
        "points": history.points,
    }


@nodes_router.patch("/{int:node_id}", response=NodeOut)
def node_update(request: HttpRequest, node_id: int, payload: NodePatch) -> Node:
    """Rename a node or dedicate it to a workspace (platform admins)."""
    user = api_user(request)
    node = selectors.node_get(user=user, node_id=node_id)
    given = payload.dict(exclude_unset=True)
    workspace: Any = services.UNSET
    if "workspace_id" in given:
        workspace_id = given["workspace_id"]
        workspace = workspace_id and workspace_get(user=user, workspace_id=workspace_id)
    services.node_update(actor=user, node=node, name=given.get("name"), workspace=workspace)
    return _node_out(user, node_id)


@nodes_router.post("/{int:node_id}/revoke", response=NodeOut)
def node_revoke(request: HttpRequest, node_id: int) -> Node:
    """Revoke a node: its token is refused and a connected agent is dropped at once."""
    user = api_user(request)
    services.node_revoke(actor=user, node=selectors.node_get(user=user, node_id=node_id))
    return _node_out(user, node_id)


@nodes_router.post("/{int:node_id}/return-to-service", response=NodeOut)
def node_return_to_service(request: HttpRequest, node_id: int) -> Node:
    """Mark a node back in service: its open events and its GPUs' are resolved."""
    user = api_user(request)
    services.node_return_to_service(actor=user, node=selectors.node_get(user=user, node_id=node_id))
    return _node_out(user, node_id)


@nodes_router.post("/{int:node_id}/gpus/{int:index}/return-to-service", response=GpuOut)
def gpu_return_to_service(request: HttpRequest, node_id: int, index: int) -> Any:
    """Mark a GPU back in service: its open events are resolved."""
    user = api_user(request)
    gpu = selectors.gpu_get(user=user, node_id=node_id, index=index)
    return services.gpu_return_to_service(actor=user, gpu=gpu)


@nodes_router.post("/{int:node_id}/gpus/{int:index}/faults", response={202: FaultOut})
def fault_inject(request: HttpRequest, node_id: int, index: int, payload: FaultIn) -> Any:
    """Inject a fault into a simulated GPU (admins of the node); refused for real GPUs."""
    user = api_user(request)
    gpu = selectors.gpu_get(user=user, node_id=node_id, index=index)
    command_id = services.fault_inject(actor=user, gpu=gpu, fault=payload.fault, code=payload.code)
    return Status(202, {"id": command_id})


# Events ------------------------------------------------------------------------------------


@events_router.get("", response=list[EventOut])
@paginate(LimitOffsetPagination)
def event_list(request: HttpRequest, filters: Query[EventFilterIn]) -> Any:
    """Health events of the nodes you can see, newest first."""
    return selectors.event_list(
        user=api_user(request),
        filters=selectors.EventFilter(
            node_id=filters.node_id,
            gpu_index=filters.gpu_index,
            severity=filters.severity,
            status=filters.status,
            source=filters.source,
            since=filters.since,
        ),
    )


@events_router.get("/{int:event_id}", response=EventOut)
def event_detail(request: HttpRequest, event_id: int) -> HealthEvent:
    """One event."""
    return selectors.event_get(user=api_user(request), event_id=event_id)


@events_router.post("/{int:event_id}/acknowledge", response=EventOut)
def event_acknowledge(request: HttpRequest, event_id: int) -> HealthEvent:
    """Acknowledge an event; watch and info events are resolved with it, fatal ones stay open."""
    user = api_user(request)
    event = selectors.event_get(user=user, event_id=event_id)
    services.event_acknowledge(actor=user, event=event)
    return selectors.event_get(user=user, event_id=event_id)


# Join tokens -------------------------------------------------------------------------------


@join_tokens_router.get("", response=list[JoinTokenOut])
@paginate(LimitOffsetPagination)
def join_token_list(request: HttpRequest) -> Any:
    """Join tokens you manage, newest first (revoked ones included)."""
    return selectors.join_token_list(user=api_user(request))


@join_tokens_router.post("", response={201: JoinTokenCreatedOut})
def join_token_create(request: HttpRequest, payload: JoinTokenIn) -> Any:
    """Create a join token; its secret and the node's command line are in this response only."""
    user = api_user(request)
    workspace = None
    if payload.workspace_id is not None:
        workspace = workspace_get(user=user, workspace_id=payload.workspace_id)
    token, plaintext = services.join_token_create(
        actor=user,
        name=payload.name,
        workspace=workspace,
        expires_in_hours=payload.expires_in_hours,
        max_uses=payload.max_uses,
    )
    server = request.build_absolute_uri("/")
    return Status(
        201,
        {
            **JoinTokenOut.from_orm(token).dict(),
            "token": plaintext,
            "command": selectors.join_command(server=server, token=plaintext),
        },
    )


@join_tokens_router.delete("/{int:token_id}", response={204: None})
def join_token_revoke(request: HttpRequest, token_id: int) -> None:
    """Revoke a join token; nodes that joined with it keep working."""
    user = api_user(request)
    token = selectors.join_token_get(user=user, token_id=token_id)
    services.join_token_revoke(actor=user, token=token)


# Alert channels ----------------------------------------------------------------------------


@alerts_router.get("", response=list[AlertChannelOut])
@paginate(LimitOffsetPagination)
def alert_channel_list(request: HttpRequest) -> Any:
    """Webhooks that receive events (platform admins)."""
    return selectors.alert_channel_list(user=api_user(request))


@alerts_router.post("", response={201: AlertChannelOut})
def alert_channel_create(request: HttpRequest, payload: AlertChannelIn) -> Any:
    """Add a webhook (platform admins); the secret is stored encrypted and never returned."""
    return Status(201, services.alert_channel_create(actor=api_user(request), **payload.dict()))


@alerts_router.get("/deliveries", response=list[DeliveryOut])
@paginate(LimitOffsetPagination)
def delivery_list(request: HttpRequest, status: AlertDelivery.Status | None = None) -> Any:
    """Deliveries of events on the nodes you can see, newest first."""
    return selectors.delivery_list(user=api_user(request), status=status)


@alerts_router.get("/{int:channel_id}", response=AlertChannelOut)
def alert_channel_detail(request: HttpRequest, channel_id: int) -> AlertChannel:
    """One webhook (platform admins)."""
    return selectors.alert_channel_get(user=api_user(request), channel_id=channel_id)


@alerts_router.patch("/{int:channel_id}", response=AlertChannelOut)
def alert_channel_update(
    request: HttpRequest, channel_id: int, payload: AlertChannelPatch
) -> AlertChannel:
    """Change a webhook (platform admins); ``secret: ""`` removes the signing secret."""
    user = api_user(request)
    channel = selectors.alert_channel_get(user=user, channel_id=channel_id)
    return services.alert_channel_update(
        actor=user, channel=channel, **payload.dict(exclude_unset=True)
    )


@alerts_router.delete("/{int:channel_id}", response={204: None})
def alert_channel_delete(request: HttpRequest, channel_id: int) -> None:
    """Remove a webhook and its delivery history (platform admins)."""
    user = api_user(request)
    services.alert_channel_delete(
        actor=user, channel=selectors.alert_channel_get(user=user, channel_id=channel_id)
    )


@alerts_router.post("/{int:channel_id}/test", response={202: DeliveryOut})
def alert_channel_test(request: HttpRequest, channel_id: int) -> Any:
    """Send the newest event to a webhook through the delivery queue (platform admins)."""
    user = api_user(request)
    channel = selectors.alert_channel_get(user=user, channel_id=channel_id)
    return Status(202, services.alert_channel_test(actor=user, channel=channel))
