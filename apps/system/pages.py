"""Small helpers every app's page views and API endpoints share: the signed-in user (of a
page or of an API call), htmx requests, form errors from services, pagination and
redirects back to where a form was posted from."""

from typing import Any

from django.conf import settings
from django.core.paginator import Paginator
from django.forms import Form
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme

from apps.accounts.selectors import User
from apps.system.errors import ApplicationError, NotFoundError, PermissionDeniedError


def request_user(request: HttpRequest) -> User:
    """The signed-in user of a view behind ``login_required``."""
    assert isinstance(request.user, User)  # noqa: S101  (login_required guarantees it)
    return request.user


def api_user(request: HttpRequest) -> User:
    """The user an API call authenticated as (the API's auth classes only yield users)."""
    user = request.auth  # type: ignore[attr-defined]
    assert isinstance(user, User)  # noqa: S101  (see above)
    return user


def is_htmx(request: HttpRequest) -> bool:
    """Whether htmx made the request (it then wants a partial)."""
    return bool(request.htmx)  # type: ignore[attr-defined]


def access_error_reraise(exc: ApplicationError) -> None:
    """Let a refusal reach the error-pages middleware (403/404) instead of a form error."""
    if isinstance(exc, NotFoundError | PermissionDeniedError):
        raise exc


def form_error(form: Form, exc: ApplicationError) -> None:
    """Show a service's refusal on the form, on its field when the form has one."""
    access_error_reraise(exc)
    form.add_error(exc.field if exc.field in form.fields else None, exc.message)


def page_of(request: HttpRequest, items: object) -> Any:
    """The page of ``items`` the request asks for (``?page=``), PAGE_SIZE rows each."""
    per_page = int(settings.PODIUM["PAGE_SIZE"])
    return Paginator(items, per_page).get_page(request.GET.get("page"))  # type: ignore[arg-type]


def query_without_page(request: HttpRequest) -> str:
    """The request's query string without ``page``, for pagination links."""
    query = request.GET.copy()
    query.pop("page", None)
    return query.urlencode()


def redirect_back(request: HttpRequest, fallback: str) -> HttpResponse:
    """Redirect to the page the form was posted from (``next``), when it is ours."""
    target = request.POST.get("next") or ""
    if not url_has_allowed_host_and_scheme(target, {request.get_host()}):
        target = fallback
    return redirect(target)
