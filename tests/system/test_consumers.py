"""The status websocket: only signed-in browsers, the partial on connect and on every push."""

from collections.abc import Callable
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from apps.accounts.models import User
from apps.system.broadcast import status_broadcast, status_html
from apps.system.consumers import CLOSE_UNAUTHENTICATED, StatusConsumer
from apps.system.health import system_status
from console.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


async def session_cookie(user: User) -> bytes:
    def sign_in() -> str:
        client = Client()
        client.force_login(user)
        return client.cookies[settings.SESSION_COOKIE_NAME].value

    return f"{settings.SESSION_COOKIE_NAME}={await database_sync_to_async(sign_in)()}".encode()


def communicator(*headers: tuple[bytes, bytes]) -> WebsocketCommunicator:
    return WebsocketCommunicator(
        application,
        "/ws/status/",
        headers=[(b"host", b"testserver"), (b"origin", b"http://testserver"), *headers],
    )


async def test_an_anonymous_websocket_is_refused() -> None:
    ws = communicator()

    connected, code = await ws.connect()

    assert not connected
    assert code == CLOSE_UNAUTHENTICATED
    await ws.disconnect()


async def test_a_forged_session_is_refused() -> None:
    ws = communicator((b"cookie", b"sessionid=not-a-session"))

    connected, _ = await ws.connect()

    assert not connected
    await ws.disconnect()


async def test_a_signed_in_user_gets_the_status_partial_then_every_push(
    make_user: Callable[..., User],
) -> None:
    user = await database_sync_to_async(make_user)()
    ws = communicator((b"cookie", await session_cookie(user)))

    connected, _ = await ws.connect()

    assert connected
    first = await ws.receive_from(timeout=3)
    assert 'id="status-components"' in first
    assert 'id="component-redis"' in first

    await status_broadcast('<div id="status-components">pushed</div>')

    assert await ws.receive_from(timeout=3) == '<div id="status-components">pushed</div>'
    await ws.disconnect()


async def test_a_push_reaches_every_watcher_and_not_the_departed(
    make_user: Callable[..., User],
) -> None:
    user = await database_sync_to_async(make_user)()
    watchers = [WebsocketCommunicator(StatusConsumer.as_asgi(), "/ws/status/") for _ in range(3)]
    for ws in watchers:
        ws.scope["user"] = user
        assert (await ws.connect())[0]
        await ws.receive_from(timeout=3)
    await watchers[0].disconnect()

    await status_broadcast("<div id='status-components'>v2</div>")

    for ws in watchers[1:]:
        assert await ws.receive_from(timeout=3) == "<div id='status-components'>v2</div>"
        await ws.disconnect()


@pytest.mark.integration
async def test_pushes_travel_through_the_redis_channel_layer(
    make_user: Callable[..., User],
) -> None:
    user = await database_sync_to_async(make_user)()
    ws = WebsocketCommunicator(StatusConsumer.as_asgi(), "/ws/status/")
    ws.scope["user"] = user
    assert (await ws.connect())[0]
    first = await ws.receive_from(timeout=3)
    assert 'data-state="ok"' in first

    await status_broadcast("<div id='status-components'>over redis</div>")

    assert await ws.receive_from(timeout=3) == "<div id='status-components'>over redis</div>"
    await ws.disconnect()


async def test_status_broadcast_sends_one_update_to_the_status_group(
    capture_broadcasts: Callable[..., Any],
) -> None:
    async with capture_broadcasts(expected=1) as captured:
        await status_broadcast("<div id='status-components'>x</div>")

    assert captured.messages == [
        {"type": "status.update", "html": "<div id='status-components'>x</div>"}
    ]


@pytest.mark.django_db
def test_the_status_partial_has_the_id_the_websocket_swaps() -> None:
    html = status_html(system_status())

    assert html.lstrip().startswith('<div id="status-components"')
    assert 'data-ok="false"' in html
    for name in ("web", "database", "redis", "worker", "beat"):
        assert f'id="component-{name}"' in html


async def test_a_page_of_another_site_cannot_open_the_socket(
    make_user: Callable[..., User],
) -> None:
    user = await database_sync_to_async(make_user)()
    ws = WebsocketCommunicator(
        application,
        "/ws/status/",
        headers=[
            (b"host", b"testserver"),
            (b"origin", b"https://evil.example"),
            (b"cookie", await session_cookie(user)),
        ],
    )

    connected, _ = await ws.connect()

    assert not connected
    await ws.disconnect()
