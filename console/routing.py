"""Websocket routes. Browsers authenticate with their session, agents with a node token."""

from apps.monitoring.routing import websocket_urlpatterns as monitoring_routes
from apps.scheduler.routing import websocket_urlpatterns as scheduler_routes
from apps.system.routing import websocket_urlpatterns as system_routes

websocket_urlpatterns = [*system_routes, *monitoring_routes, *scheduler_routes]
