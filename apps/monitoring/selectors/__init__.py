"""Reads, always starting from the nodes the requesting user may see.

A node with no workspace is shared: every signed-in user sees it. A node dedicated to a
workspace is seen by that workspace's members (any role) and by platform admins. Any
other node, and everything on it, is reported as not found, never as forbidden.
"""

from apps.monitoring.selectors.alerts import (
    alert_active_list,
    alert_channel_get,
    alert_channel_list,
    delivery_list,
)
from apps.monitoring.selectors.events import (
    EVENT_STATUSES,
    EventFilter,
    event_acknowledge_scope,
    event_get,
    event_list,
    event_sources,
)
from apps.monitoring.selectors.fleet import (
    FleetCell,
    FleetOverview,
    FleetRow,
    FleetTotals,
    fleet_overview,
    natural_key,
)
from apps.monitoring.selectors.history import (
    HISTORY_RANGES,
    RAW,
    History,
    gpu_history,
    host_sample_latest,
    node_recent,
)
from apps.monitoring.selectors.nodes import (
    NodeFilter,
    NodeLive,
    fleet_groups_for_user,
    gpu_get,
    join_command,
    join_token_can_manage,
    join_token_get,
    join_token_list,
    node_can_acknowledge,
    node_can_manage,
    node_get,
    node_gpus,
    node_ids_visible,
    node_list,
    node_live,
    node_role,
    scope_role,
    summary_visible,
    workspace_ids_of,
)

__all__ = [
    "EVENT_STATUSES",
    "HISTORY_RANGES",
    "RAW",
    "EventFilter",
    "FleetCell",
    "FleetOverview",
    "FleetRow",
    "FleetTotals",
    "History",
    "NodeFilter",
    "NodeLive",
    "alert_active_list",
    "alert_channel_get",
    "alert_channel_list",
    "delivery_list",
    "event_acknowledge_scope",
    "event_get",
    "event_list",
    "event_sources",
    "fleet_groups_for_user",
    "fleet_overview",
    "gpu_get",
    "gpu_history",
    "host_sample_latest",
    "join_command",
    "join_token_can_manage",
    "join_token_get",
    "join_token_list",
    "natural_key",
    "node_can_acknowledge",
    "node_can_manage",
    "node_get",
    "node_gpus",
    "node_ids_visible",
    "node_list",
    "node_live",
    "node_recent",
    "node_role",
    "scope_role",
    "summary_visible",
    "workspace_ids_of",
]
