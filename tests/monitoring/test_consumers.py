"""Browser websockets: authorised in connect, scoped like the pages, then forwarding."""

import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from apps.accounts.models import User
from apps.monitoring import consumers
from apps.monitoring.broadcast import (
    FLEET_ALL_GROUP,
    FLEET_SHARED_GROUP,
    fleet_workspace_group,
    group_send,
    node_group,
)
from apps.monitoring.consumers import CLOSE_NOT_FOUND, CLOSE_UNAUTHENTICATED
from apps.monitoring.models import Node
from console.asgi import application
from tests.conftest import Cast
from tests.monitoring.factories import node_create

pytestmark = pytest.mark.django_db(transaction=True)


def summary(node: Node) -> dict[str, Any]:
    return {
        "id": node.pk,
        "name": node.name,
        "ws": node.workspace_id,
        "state": "ready",
        "health": "healthy",
        "gpus": [[50.0, 10.0, 40.0, 200.0, 0]],
        "host": {"cpu": 1.0, "mem_pct": 2.0},
    }


@pytest.fixture
def nodes(cast: Cast) -> dict[str, Node]:
    return {
        "shared": node_create("shared-1", gpus=1),
        "mine": node_create("vision-1", workspace=cast.workspace, gpus=1),
        "theirs": node_create("speech-1", workspace=cast.other_workspace, gpus=1),
    }


@pytest.fixture
def snapshots(monkeypatch: pytest.MonkeyPatch, nodes: dict[str, Node]) -> list[list[int]]:
    """The fleet snapshot asked for; it answers with every node, as a careless store might."""
    asked: list[list[int]] = []

    async def fleet_snapshot(node_ids: list[int]) -> list[dict[str, Any]]:
        asked.append(sorted(node_ids))
        return [summary(n) for n in nodes.values()]

    monkeypatch.setattr(consumers, "fleet_snapshot", fleet_snapshot)
    return asked


async def session_cookie(user: User) -> bytes:
    def sign_in() -> str:
        client = Client()
        client.force_login(user)
        return client.cookies[settings.SESSION_COOKIE_NAME].value

    return f"{settings.SESSION_COOKIE_NAME}={await database_sync_to_async(sign_in)()}".encode()


def routed(path: str, *headers: tuple[bytes, bytes]) -> WebsocketCommunicator:
    return WebsocketCommunicator(
        application,
        path,
        headers=[(b"host", b"testserver"), (b"origin", b"http://testserver"), *headers],
    )


def fleet(user: User) -> WebsocketCommunicator:
    ws = WebsocketCommunicator(consumers.FleetConsumer.as_asgi(), "/ws/monitoring/fleet/")
    ws.scope["user"] = user
    return ws


def node_socket(user: User, node_id: int) -> WebsocketCommunicator:
    path = f"/ws/monitoring/nodes/{node_id}/"
    ws = WebsocketCommunicator(consumers.NodeConsumer.as_asgi(), path)
    ws.scope["user"] = user
    ws.scope["url_route"] = {"args": (), "kwargs": {"node_id": node_id}}
    return ws


@pytest.mark.parametrize("path", ["/ws/monitoring/fleet/", "/ws/monitoring/nodes/1/"])
async def test_an_anonymous_browser_is_refused(path: str) -> None:
    ws = routed(path)

    connected, code = await ws.connect()

    assert not connected
    assert code == CLOSE_UNAUTHENTICATED
    await ws.disconnect()


async def test_a_member_cannot_watch_another_workspaces_node(
    cast: Cast, nodes: dict[str, Node]
) -> None:
    ws = routed(
        f"/ws/monitoring/nodes/{nodes['theirs'].pk}/",
        (b"cookie", await session_cookie(cast.member)),
    )

    connected, code = await ws.connect()

    assert not connected
    assert code == CLOSE_NOT_FOUND
    await ws.disconnect()


async def test_a_node_that_does_not_exist_is_refused_the_same_way(cast: Cast) -> None:
    ws = node_socket(cast.member, 999_999)

    assert await ws.connect() == (False, CLOSE_NOT_FOUND)
    await ws.disconnect()


async def test_the_fleet_snapshot_holds_only_visible_nodes(
    cast: Cast, nodes: dict[str, Node], snapshots: list[list[int]]
) -> None:
    ws = fleet(cast.member)

    assert (await ws.connect())[0]
    first = await ws.receive_json_from(timeout=3)

    assert first["kind"] == "snapshot"
    assert {n["name"] for n in first["nodes"]} == {"shared-1", "vision-1"}
    assert snapshots == [sorted([nodes["shared"].pk, nodes["mine"].pk])]
    await ws.disconnect()


async def test_a_member_gets_frames_of_their_scope_and_never_another_workspaces_node(
    cast: Cast, nodes: dict[str, Node], snapshots: list[list[int]]
) -> None:
    ws = fleet(cast.member)
    assert (await ws.connect())[0]
    await ws.receive_json_from(timeout=3)

    await group_send(FLEET_ALL_GROUP, {"type": "fleet.frame", "nodes": [summary(nodes["theirs"])]})
    await group_send(
        fleet_workspace_group(cast.other_workspace.pk),
        {"type": "fleet.frame", "nodes": [summary(nodes["theirs"])]},
    )
    assert await ws.receive_nothing(timeout=0.2)

    await group_send(
        FLEET_SHARED_GROUP,
        {"type": "fleet.frame", "nodes": [summary(nodes["theirs"]), summary(nodes["shared"])]},
    )
    delta = await ws.receive_json_from(timeout=3)
    assert delta == {"kind": "delta", "nodes": [summary(nodes["shared"])]}

    await group_send(
        fleet_workspace_group(cast.workspace.pk),
        {"type": "fleet.frame", "nodes": [summary(nodes["mine"])]},
    )
    assert (await ws.receive_json_from(timeout=3))["nodes"][0]["name"] == "vision-1"
    await ws.disconnect()


async def test_a_platform_admin_gets_every_node_through_one_group(
    cast: Cast, nodes: dict[str, Node], snapshots: list[list[int]]
) -> None:
    ws = fleet(cast.platform_admin)
    assert (await ws.connect())[0]
    first = await ws.receive_json_from(timeout=3)
    assert len(first["nodes"]) == 3

    await group_send(FLEET_ALL_GROUP, {"type": "fleet.frame", "nodes": [summary(nodes["theirs"])]})

    assert (await ws.receive_json_from(timeout=3))["nodes"][0]["name"] == "speech-1"
    await group_send(
        FLEET_SHARED_GROUP, {"type": "fleet.frame", "nodes": [summary(nodes["shared"])]}
    )
    assert await ws.receive_nothing(timeout=0.2)
    await ws.disconnect()


async def test_a_node_watcher_gets_its_batches_states_and_events(
    cast: Cast, nodes: dict[str, Node]
) -> None:
    node = nodes["mine"]
    ws = node_socket(cast.viewer, node.pk)
    assert (await ws.connect())[0]
    assert await ws.receive_json_from(timeout=3) == {"kind": "snapshot", "node": None}
    batch = {"type": "batch", "seq": 7, "ts": 1.5, "gpus": [{"i": 0, "util": 90}], "host": {}}

    await group_send(node_group(node.pk), {"type": "node.batch", "batch": batch})
    await group_send(
        node_group(node.pk),
        {"type": "node.state", "state": "suspect", "health": "degraded", "gpus": {0: "degraded"}},
    )
    await group_send(node_group(node.pk), {"type": "node.event", "event": {"id": 4}})

    assert await ws.receive_json_from(timeout=3) == {"kind": "batch", "batch": batch}
    assert await ws.receive_json_from(timeout=3) == {
        "kind": "state",
        "state": "suspect",
        "health": "degraded",
        "gpus": {"0": "degraded"},
    }
    assert await ws.receive_json_from(timeout=3) == {"kind": "event", "event": {"id": 4}}
    await ws.disconnect()


async def test_a_departed_watcher_gets_nothing_more(cast: Cast, nodes: dict[str, Node]) -> None:
    node = nodes["shared"]
    stays, leaves = node_socket(cast.member, node.pk), node_socket(cast.viewer, node.pk)
    for ws in (stays, leaves):
        assert (await ws.connect())[0]
        await ws.receive_json_from(timeout=3)
    await leaves.disconnect()

    await group_send(node_group(node.pk), {"type": "node.event", "event": {"id": 1}})

    assert (await stays.receive_json_from(timeout=3))["kind"] == "event"
    await stays.disconnect()


@pytest.mark.integration
async def test_frames_travel_through_the_redis_channel_layer(
    cast: Cast, nodes: dict[str, Node], snapshots: list[list[int]]
) -> None:
    ws = fleet(cast.member)
    assert (await ws.connect())[0]
    await ws.receive_json_from(timeout=3)

    await group_send(
        fleet_workspace_group(cast.workspace.pk),
        {"type": "fleet.frame", "nodes": [summary(nodes["mine"])]},
    )

    message = json.loads(await ws.receive_from(timeout=3))
    assert message["kind"] == "delta"
    await ws.disconnect()
