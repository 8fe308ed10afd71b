"""The console side of the agent protocol: everything the agent consumer does to the database.

Synchronous functions; the consumer calls them through ``database_sync_to_async``.

- ``schema``: validation of hello, batch and time messages (no database).
- ``nodes``: tokens, joining, connecting, node states and the heartbeat sweep.
- ``events``: findings to health events, health refresh, alerts.
- ``live``: the live summary in Redis, pushes to browsers, raw sample rows.
"""

from apps.monitoring.ingest.events import event_raise, findings_apply, open_conditions
from apps.monitoring.ingest.live import (
    NodeView,
    batch_rows,
    node_events_push,
    node_live_update,
    samples_store,
    summary_build,
)
from apps.monitoring.ingest.nodes import (
    AgentRefused,
    AuthResult,
    agent_authenticate,
    node_clock_skew_set,
    node_connect,
    node_join,
    node_seen,
    nodes_sweep,
)
from apps.monitoring.ingest.schema import (
    Batch,
    Hello,
    ProtocolError,
    batch_validate,
    hello_validate,
    time_validate,
)

__all__ = [
    "AgentRefused",
    "AuthResult",
    "Batch",
    "Hello",
    "NodeView",
    "ProtocolError",
    "agent_authenticate",
    "batch_rows",
    "batch_validate",
    "event_raise",
    "findings_apply",
    "hello_validate",
    "node_clock_skew_set",
    "node_connect",
    "node_events_push",
    "node_join",
    "node_live_update",
    "node_seen",
    "nodes_sweep",
    "open_conditions",
    "samples_store",
    "summary_build",
    "time_validate",
]
