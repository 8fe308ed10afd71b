from django.urls import path

from apps.monitoring.agent_consumer import AgentConsumer
from apps.monitoring.consumers import FleetConsumer, NodeConsumer
from podium.agent.protocol import AGENT_PATH

websocket_urlpatterns = [
    path(AGENT_PATH.lstrip("/"), AgentConsumer.as_asgi()),
    path("ws/monitoring/fleet/", FleetConsumer.as_asgi()),
    path("ws/monitoring/nodes/<int:node_id>/", NodeConsumer.as_asgi()),
]
