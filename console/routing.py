"""Websocket routes. Browsers authenticate with their session; each app adds its own routes."""

from apps.system.routing import websocket_urlpatterns as system_routes

websocket_urlpatterns = [*system_routes]
