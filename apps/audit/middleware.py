"""Records each request's client address and user agent for the audit log."""

from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.utils.decorators import sync_and_async_middleware

from apps.audit.context import RequestOrigin, current_origin


def request_origin(request: HttpRequest) -> RequestOrigin:
    """The client address (REMOTE_ADDR, as the ASGI server saw it) and user agent."""
    return RequestOrigin(
        ip=request.META.get("REMOTE_ADDR") or None,
        user_agent=request.META.get("HTTP_USER_AGENT", "")[:200],
    )


@sync_and_async_middleware
def request_context_middleware(get_response: Callable) -> Callable:
    """Sets the request origin for the duration of the request, sync or async."""
    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> HttpResponse:
            token = current_origin.set(request_origin(request))
            try:
                response: Awaitable[HttpResponse] = get_response(request)
                return await response
            finally:
                current_origin.reset(token)

        return async_middleware

    def middleware(request: HttpRequest) -> HttpResponse:
        token = current_origin.set(request_origin(request))
        try:
            return get_response(request)
        finally:
            current_origin.reset(token)

    return middleware
