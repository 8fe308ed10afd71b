"""Every page works offline: no external URL, and every asset it names is served locally."""

import re
from collections.abc import Callable, Iterator

import pytest
from django.contrib.staticfiles import finders
from django.test import Client

from apps.accounts import services
from tests.conftest import PASSWORD, Cast, csrf_token

pytestmark = pytest.mark.django_db

URL = re.compile(r"""https?://[^\s"'<>)\\]+""")
ASSET = re.compile(r"""(?:src|href)=["'](/static/[^"'?#]+)""")

REQUIRED_ASSETS = [
    "/static/podium/podium.css",
    "/static/podium/favicon.svg",
    "/static/podium/status.js",
    "/static/django_htmx/htmx-2.min.js",
    "/static/django_htmx/ext/hx-ws-2.min.js",
    "/static/vendor/plotly.min.js",
]


@pytest.fixture
def rendered_pages(cast: Cast, session_client: Callable[..., Client]) -> dict[str, str]:
    """The HTML of every page, as the roles that can see it get it."""
    services.token_create(actor=cast.platform_admin, name="laptop")
    services.workspace_update(actor=cast.ws_admin, workspace=cast.workspace, description="cv")
    admin = session_client(cast.platform_admin)
    member = session_client(cast.member)
    responses = {
        "sign-in": Client().get("/login/"),
        "workspaces": admin.get("/workspaces/"),
        "workspace": admin.get(f"/workspaces/{cast.workspace.pk}/"),
        "workspace (member)": member.get(f"/workspaces/{cast.workspace.pk}/"),
        "tokens": admin.get("/tokens/"),
        "token created": admin.post("/tokens/", {"name": "fresh"}),
        "users": admin.get("/users/"),
        "audit": admin.get("/audit/"),
        "status": admin.get("/status/"),
        "password": admin.get("/account/password/"),
        "not allowed": member.get("/users/"),
        "not found": member.get(f"/workspaces/{cast.other_workspace.pk}/"),
        "api docs": admin.get("/api/docs"),
    }
    pages = {}
    for name, response in responses.items():
        assert response.status_code in {200, 403, 404}, name
        pages[name] = response.content.decode()
    return pages


def _assets(pages: dict[str, str]) -> Iterator[str]:
    for html in pages.values():
        yield from ASSET.findall(html)


def test_no_page_references_an_external_url(rendered_pages: dict[str, str]) -> None:
    external = {
        name: found
        for name, html in rendered_pages.items()
        if (found := [u for u in URL.findall(html) if not u.startswith("http://testserver/")])
    }

    assert external == {}


def test_every_asset_a_page_names_is_served(rendered_pages: dict[str, str]) -> None:
    client = Client()
    assets = set(_assets(rendered_pages))
    assert set(REQUIRED_ASSETS) - {"/static/vendor/plotly.min.js"} <= assets

    missing = {url: client.get(url).status_code for url in assets}

    assert {url: status for url, status in missing.items() if status != 200} == {}


@pytest.mark.parametrize("url", REQUIRED_ASSETS)
def test_static_assets_are_served_locally(db: None, url: str) -> None:
    response = Client().get(url)

    assert response.status_code == 200
    assert b"".join(response.streaming_content)


def test_plotly_is_found_in_the_installed_package() -> None:
    found = finders.find("vendor/plotly.min.js")

    assert found is not None
    assert found.endswith("plotly.min.js")
    assert "vendor/plotly.min.js" in {
        f"{getattr(storage, 'prefix', '')}/{path}".lstrip("/")
        for finder in finders.get_finders()
        for path, storage in finder.list([])
        if path.endswith("plotly.min.js")
    }


def test_the_status_page_follows_the_websocket(
    cast: Cast, session_client: Callable[..., Client]
) -> None:
    page = session_client(cast.viewer).get("/status/").content.decode()

    assert 'ws-connect="/ws/status/"' in page
    assert 'id="status-components"' in page
    assert "Redis" in page


def test_the_status_partial_alone_for_htmx(
    cast: Cast, session_client: Callable[..., Client]
) -> None:
    response = session_client(cast.viewer).get("/status/", HTTP_HX_REQUEST="true")

    html = response.content.decode()
    assert html.lstrip().startswith('<div id="status-components"')
    assert "<html" not in html


def test_pages_are_sent_with_protective_headers_and_cookies(
    cast: Cast, session_client: Callable[..., Client]
) -> None:
    anonymous = Client()
    signin = anonymous.get("/login/")
    page = session_client(cast.member).get("/workspaces/")

    for response in (signin, page):
        assert response["X-Frame-Options"] == "DENY"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Referrer-Policy"] == "same-origin"
    assert anonymous.cookies["csrftoken"]["samesite"] == "Lax"
    token = csrf_token(anonymous)
    anonymous.post(
        "/login/", {"username": "bob", "password": PASSWORD, "csrfmiddlewaretoken": token}
    )
    session = anonymous.cookies["sessionid"]
    assert session["httponly"]
    assert session["samesite"] == "Lax"
