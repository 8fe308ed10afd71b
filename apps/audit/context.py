"""Where the current request comes from, for the audit entries its services write."""

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class RequestOrigin:
    ip: str | None = None
    user_agent: str = ""


current_origin: ContextVar[RequestOrigin] = ContextVar("podium_request_origin")


def origin_get() -> RequestOrigin:
    """The origin of the request being served, or an empty one outside a request."""
    return current_origin.get(RequestOrigin())
