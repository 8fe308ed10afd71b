"""Browser websockets must come from a page of this console (cross-site websocket hijacking).

A browser always sends ``Origin``; it must match the ``Host`` the browser connected
to, or be listed in PODIUM_CSRF_TRUSTED_ORIGINS (a proxy on another name). Clients
that are not browsers send no Origin and still have to authenticate.
"""

from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings


def scope_header(scope: dict[str, Any], name: bytes) -> str | None:
    """The first value of header ``name`` (lower-case bytes) of an ASGI connection."""
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin1")
    return None


def origin_allowed(scope: dict[str, Any]) -> bool:
    """Whether the websocket's Origin is this console's own, or a trusted one."""
    origin = scope_header(scope, b"origin")
    if origin is None:
        return True
    if origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    host = scope_header(scope, b"host")
    return host is not None and urlsplit(origin).netloc.lower() == host.lower()


class SameOriginValidator:
    """ASGI middleware that refuses websockets opened from another site's pages."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if origin_allowed(scope):
            return await self.application(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)
