"""Browser websockets are accepted only from the console's own pages."""

import pytest

from apps.system.origin import origin_allowed


def scope(**headers: str) -> dict:
    return {"type": "websocket", "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}


def test_a_page_of_the_console_may_open_a_websocket():
    assert origin_allowed(scope(host="podium.lab:8000", origin="http://podium.lab:8000"))


def test_a_page_of_another_site_may_not():
    assert not origin_allowed(scope(host="podium.lab:8000", origin="https://evil.example"))


def test_a_client_that_is_not_a_browser_sends_no_origin_and_is_let_through_to_authenticate():
    assert origin_allowed(scope(host="podium.lab:8000"))


@pytest.mark.parametrize("origin", ["https://console.corp", "https://other.corp"])
def test_trusted_origins_behind_a_proxy(settings, origin):
    settings.CSRF_TRUSTED_ORIGINS = ["https://console.corp"]
    allowed = origin_allowed(scope(host="10.0.0.5:8000", origin=origin))
    assert allowed is (origin == "https://console.corp")
