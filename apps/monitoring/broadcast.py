"""The only place that names monitoring's channel groups and Redis keys, and shapes the
event that ``node.event`` messages and webhooks carry.

Groups
- ``monitoring.node.<id>``: every batch of one node, for its detail page.
- ``monitoring.fleet.all`` / ``.shared`` / ``.ws.<workspace id>``: fleet frames for the
  overview, per visibility scope (platform admins; shared nodes; a workspace's nodes).
- ``monitoring.agent.<id>``: commands to the connection of one node's agent.

Redis (live state, shared by every web and worker process)
- ``LATEST_KEY`` hash: node id → JSON of the node's live summary (see ``fleet.py``).
- ``SEEN_KEY`` hash: node id → epoch seconds the console last heard from it.
- ``DIRTY_KEY`` set: node ids whose live summary changed since the last fleet frame.
- ``REJECTED_KEY`` hash: node id → messages refused (malformed, oversized, flooding).
"""

from typing import Any

from channels.layers import get_channel_layer

from apps.monitoring.models import HealthEvent

LATEST_KEY = "podium:mon:latest"
SEEN_KEY = "podium:mon:seen"
DIRTY_KEY = "podium:mon:dirty"
REJECTED_KEY = "podium:mon:rejected"
FLEET_LEADER_KEY = "podium:mon:fleet-leader"

FLEET_ALL_GROUP = "monitoring.fleet.all"
FLEET_SHARED_GROUP = "monitoring.fleet.shared"


def node_group(node_id: int) -> str:
    """Browsers watching one node."""
    return f"monitoring.node.{node_id}"


def agent_group(node_id: int) -> str:
    """The agent connection of one node (commands go here)."""
    return f"monitoring.agent.{node_id}"


def fleet_workspace_group(workspace_id: int) -> str:
    """Browsers of one workspace's members watching the fleet."""
    return f"monitoring.fleet.ws.{workspace_id}"


def fleet_groups_for(workspace_id: int | None) -> list[str]:
    """The fleet groups a node's changes go to: platform admins, plus its scope."""
    scope = FLEET_SHARED_GROUP if workspace_id is None else fleet_workspace_group(workspace_id)
    return [FLEET_ALL_GROUP, scope]


async def group_send(group: str, message: dict[str, Any]) -> None:
    """Send ``message`` to ``group`` when a channel layer is configured."""
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(group, message)


def event_payload(event: HealthEvent) -> dict[str, Any]:
    """An event as ``node.event`` messages carry it."""
    return {
        "id": event.pk,
        "gpu_index": event.gpu_index,
        "source": event.source,
        "code": event.code,
        "rule_class": event.rule_class,
        "severity": event.severity,
        "reason": event.reason,
        "action": event.action,
        "count": event.count,
        "last_at": event.last_at.isoformat(),
        "acknowledged": event.acknowledged_at is not None,
        "resolved": event.resolved_at is not None,
    }
