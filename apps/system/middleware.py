"""Pages answer a selector's NotFoundError with the 404 page and a PermissionDeniedError
with the 403 page, so views need no try/except for either."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from apps.system.errors import NotFoundError, PermissionDeniedError


class ApplicationErrorPagesMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, NotFoundError):
            return render(request, "404.html", status=404)
        if isinstance(exception, PermissionDeniedError):
            return render(request, "403.html", {"reason": exception.message}, status=403)
        return None
