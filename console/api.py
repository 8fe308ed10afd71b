"""The REST API root: authentication, one error format, and every app's router.

Errors always read ``{"detail": "<message>", "field": "<field or null>"}``.
"""

from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.security import APIKeyCookie, HttpBearer
from ninja.utils import check_csrf

from apps.accounts.api import auth_router, tokens_router, users_router, workspaces_router
from apps.accounts.services import token_authenticate
from apps.audit.api import router as audit_router
from apps.monitoring.api import alerts_router, events_router, join_tokens_router, nodes_router
from apps.scheduler.api import jobs_router, pools_router, quotas_router
from apps.scheduler.api import nodes_router as scheduler_nodes_router
from apps.system.api import router as system_router
from apps.system.errors import ApplicationError
from apps.training.api import goodput_router, runs_router
from apps.training.api_datasets import datasets_router


class BearerTokenAuth(HttpBearer):
    """``Authorization: Bearer pdm_…`` with a personal API token."""

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        user = token_authenticate(plaintext=token.strip(), ip=request.META.get("REMOTE_ADDR"))
        if user is not None:
            request.user = user
        return user


class SessionCsrfAuth(APIKeyCookie):
    """The browser's session; unsafe methods must carry the CSRF token."""

    param_name = "sessionid"

    def _get_key(self, request: HttpRequest) -> str | None:
        if not request.user.is_authenticated:
            return None
        if check_csrf(request) is not None:
            raise HttpError(403, "CSRF check failed: send the X-CSRFToken header.")
        return request.COOKIES.get(self.param_name)

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        return request.user if request.user.is_authenticated else None


api = NinjaAPI(
    title="Podium API",
    version="1",
    description="On-prem console for GPU clusters. Authenticate with `Authorization: Bearer "
    "<token>` (create one on the Tokens page or with `POST /api/auth/token`) or the session.",
    auth=[BearerTokenAuth(), SessionCsrfAuth()],
    urls_namespace="api",
    docs_url="/docs",
)


def _error(
    request: HttpRequest, status: int, detail: str, field: str | None = None
) -> HttpResponse:
    return api.create_response(request, {"detail": detail, "field": field}, status=status)


def _field_of(location: list[Any]) -> str | None:
    """The field a validation error's location names, without the leading source and
    parameter names (``["body", "payload", "path"]`` is ``path``)."""
    parts = [str(p) for p in location]
    if parts and parts[0] in ("body", "query", "path", "form", "file"):
        parts.pop(0)
    if len(parts) > 1 and parts[0] in ("payload", "filters", "data"):
        parts.pop(0)
    return ".".join(parts) or None


@api.exception_handler(ApplicationError)
def application_error(request: HttpRequest, exc: ApplicationError) -> HttpResponse:
    return _error(request, exc.status, exc.message, exc.field)


@api.exception_handler(ValidationError)
def validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    first = exc.errors[0] if exc.errors else {}
    field = _field_of(list(first.get("loc", [])))
    message = first.get("msg", "Invalid input.")
    detail = f"{field}: {message}" if field else message
    return _error(request, 422, detail, field)


@api.exception_handler(AuthenticationError)
def authentication_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return _error(
        request, 401, "Authentication required: send a valid Bearer token or sign in.", None
    )


@api.exception_handler(RequestDataTooBig)
def request_too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    return _error(request, 413, "The request body is too large (at most 1 MiB).", None)


@api.exception_handler(HttpError)
def http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    return _error(request, exc.status_code, str(exc), None)


api.add_router("/auth", auth_router)
api.add_router("/workspaces", workspaces_router)
api.add_router("/tokens", tokens_router)
api.add_router("/users", users_router)
api.add_router("/audit", audit_router)
api.add_router("/nodes", nodes_router)
api.add_router("/nodes", scheduler_nodes_router)
api.add_router("/jobs", jobs_router)
api.add_router("/jobs", runs_router)
api.add_router("/training", goodput_router)
api.add_router("/datasets", datasets_router)
api.add_router("/pools", pools_router)
api.add_router("/quotas", quotas_router)
api.add_router("/events", events_router)
api.add_router("/join-tokens", join_tokens_router)
api.add_router("/alert-channels", alerts_router)
api.add_router("/", system_router)
