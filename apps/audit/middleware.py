"""Records each request's client address and user agent for the audit log."""

from collections.abc import Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse

from apps.audit.context import RequestOrigin, current_origin


def request_origin(request: HttpRequest) -> RequestOrigin:
    """The client address (REMOTE_ADDR, as the ASGI server saw it) and user agent."""
    return RequestOrigin(
        ip=request.META.get("REMOTE_ADDR") or None,
        user_agent=request.META.get("HTTP_USER_AGENT", "")[:200],
    )


class RequestContextMiddleware:
    """Sets the request origin for the duration of the request, sync or async."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if iscoroutinefunction(self):
            return self.__acall__(request)  # type: ignore[return-value]
        token = current_origin.set(request_origin(request))
        try:
            return self.get_response(request)
        finally:
            current_origin.reset(token)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        token = current_origin.set(request_origin(request))
        try:
            return await self.get_response(request)
        finally:
            current_origin.reset(token)
