"""The agent websocket: authentication, joining, batches, refusals, commands, clock skew."""

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from apps.monitoring.agent_consumer import AgentConsumer
from apps.monitoring.broadcast import (
    DIRTY_KEY,
    LATEST_KEY,
    REJECTED_KEY,
    SEEN_KEY,
    agent_group,
    node_group,
)
from apps.monitoring.models import Gpu, GpuSample, HealthEvent, HostSample, Node
from apps.system.heartbeats import redis_client
from console.asgi import application
from podium.agent.protocol import (
    CLOSE_BAD_TOKEN,
    CLOSE_PROTOCOL,
    CLOSE_REPLACED,
    CLOSE_REVOKED,
)
from podium.tokenbucket import TokenBucket
from tests.monitoring.agent_frames import (
    batch,
    hello,
    join_token_make,
    node_token_give,
    reading,
    xid_event,
)
from tests.monitoring.factories import node_create

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def quick_flush(settings: Any) -> None:
    settings.PODIUM = {**settings.PODIUM, "TELEMETRY_FLUSH_INTERVAL": 0.1}


def communicator(token: str | None) -> WebsocketCommunicator:
    headers = [(b"host", b"testserver")]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return WebsocketCommunicator(application, "/ws/agent/", headers=headers)


async def close_code(ws: WebsocketCommunicator, timeout: float = 3) -> int:
    """Read until the console closes the socket; the close code."""
    deadline = time.monotonic() + timeout
    while True:
        output = await ws.receive_output(timeout=max(0.01, deadline - time.monotonic()))
        if output["type"] == "websocket.close":
            return output["code"]


async def receive_type(ws: WebsocketCommunicator, kind: str, timeout: float = 3) -> dict:
    """The next message of type ``kind`` (others before it are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        message = await ws.receive_json_from(timeout=max(0.01, deadline - time.monotonic()))
        if message["type"] == kind:
            return message


async def ack_of(ws: WebsocketCommunicator, seq: int, timeout: float = 3) -> None:
    deadline = time.monotonic() + timeout
    while (await receive_type(ws, "ack", deadline - time.monotonic()))["seq"] < seq:
        pass


@contextlib.asynccontextmanager
async def connected(token: str, first: dict | None = None) -> AsyncIterator[Any]:
    """An agent connected and welcomed; yields (communicator, welcome)."""
    ws = communicator(token)
    assert (await ws.connect())[0]
    await ws.send_json_to(first or hello())
    welcome = await receive_type(ws, "welcome")
    try:
        yield ws, welcome
    finally:
        await ws.disconnect()


async def node_with_token(name: str = "gpu-node-1", gpus: int = 2) -> tuple[Node, str]:
    def make() -> tuple[Node, str]:
        node = node_create(name, gpus=gpus)
        return node, node_token_give(node)

    return await database_sync_to_async(make)()


# Authentication ----------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "not-a-token", "pdn_0123456789ab_forged"])
async def test_a_bad_or_missing_token_is_closed_with_4401(token: str | None) -> None:
    ws = communicator(token)

    await ws.connect()

    assert await close_code(ws) == CLOSE_BAD_TOKEN
    await ws.disconnect()


async def test_a_token_in_the_query_string_is_not_accepted() -> None:
    _, token = await node_with_token()
    ws = WebsocketCommunicator(application, f"/ws/agent/?token={token}")

    await ws.connect()

    assert await close_code(ws) == CLOSE_BAD_TOKEN
    await ws.disconnect()


async def test_a_revoked_node_is_refused_at_once() -> None:
    node, token = await node_with_token()
    await database_sync_to_async(Node.objects.filter(pk=node.pk).update)(
        revoked_at=timezone.now(), state=Node.State.REVOKED
    )
    ws = communicator(token)

    await ws.connect()

    assert await close_code(ws, timeout=1) == CLOSE_REVOKED
    await ws.disconnect()


async def test_a_connected_node_revoked_mid_session_is_closed() -> None:
    node, token = await node_with_token()
    async with connected(token) as (ws, _):
        await get_channel_layer().group_send(agent_group(node.pk), {"type": "agent.revoke"})

        assert await close_code(ws) == CLOSE_REVOKED


async def test_the_first_frame_must_be_a_hello() -> None:
    _, token = await node_with_token()
    ws = communicator(token)
    await ws.connect()

    await ws.send_json_to(batch(1))

    assert await close_code(ws) == CLOSE_PROTOCOL
    await ws.disconnect()


async def test_an_agent_silent_after_connecting_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(AgentConsumer, "HELLO_TIMEOUT", 0.2)
    _, token = await node_with_token()
    ws = communicator(token)
    await ws.connect()

    assert await close_code(ws, timeout=2) == CLOSE_PROTOCOL
    await ws.disconnect()


# Joining and connecting --------------------------------------------------------------------


async def test_joining_welcomes_with_a_node_token_and_records_the_node() -> None:
    _, join_token = await database_sync_to_async(join_token_make)()

    async with connected(join_token, hello("fresh-node", gpus=3)) as (ws, welcome):
        assert welcome["node_token"].startswith("pdn_")
        assert welcome["name"] == "fresh-node"
        assert welcome["interval"] > 0
        assert welcome["heartbeat"] > 0
        assert (await receive_type(ws, "time"))["t0"] == pytest.approx(time.time(), abs=5)

    node = await database_sync_to_async(Node.objects.get)(name="fresh-node")
    assert node.pk == welcome["node_id"]
    assert (node.state, node.facts["hostname"], node.expected_gpus) == ("ready", "fresh-node", 3)
    assert node.last_seen_at is not None
    assert await database_sync_to_async(Gpu.objects.filter(node=node).count)() == 3

    async with connected(welcome["node_token"], hello("fresh-node", gpus=3)) as (_, again):
        assert again["node_id"] == node.pk
        assert "node_token" not in again


async def test_a_second_connection_of_the_same_node_replaces_the_first() -> None:
    _, token = await node_with_token()
    async with connected(token) as (first, _), connected(token) as (second, _):
        assert await close_code(first) == CLOSE_REPLACED
        await second.send_json_to(batch(1))
        await ack_of(second, 1)


async def test_commands_reach_the_agent() -> None:
    node, token = await node_with_token()
    command = {"type": "inject_fault", "id": "f1", "gpu": 0, "fault": "xid", "code": 79}
    async with connected(token) as (ws, _):
        await get_channel_layer().group_send(
            agent_group(node.pk), {"type": "agent.command", "command": command}
        )

        assert await receive_type(ws, "inject_fault") == command


async def test_the_console_tells_a_quiet_agent_it_is_there(settings: Any) -> None:
    settings.PODIUM = {**settings.PODIUM, "AGENT_HEARTBEAT_INTERVAL": 0.3}
    _, token = await node_with_token()
    async with connected(token) as (ws, welcome):
        beat = await receive_type(ws, "heartbeat", timeout=2)

    lost_after, interval = settings.PODIUM["NODE_LOST_AFTER"], settings.PODIUM["AGENT_INTERVAL"]
    assert lost_after / 2 <= welcome["fence_after"] <= lost_after - interval
    assert beat["ts"] == pytest.approx(time.time(), abs=2)


# Batches -----------------------------------------------------------------------------------


async def test_batches_are_stored_then_acknowledged_and_replays_stored_once() -> None:
    node, token = await node_with_token()
    base = time.time() - 30
    async with connected(token) as (ws, _):
        for seq in range(1, 4):
            await ws.send_json_to(batch(seq, ts=base + seq, replay=True))
        await ack_of(ws, 3)
    async with connected(token) as (ws, _):
        for seq in range(2, 6):
            await ws.send_json_to(batch(seq, ts=base + seq, replay=seq < 5))
        await ack_of(ws, 5)

    count = database_sync_to_async(lambda model: model.objects.filter(node=node).count())
    assert await count(GpuSample) == 5 * 2
    assert await count(HostSample) == 5


async def test_a_live_batch_goes_to_the_nodes_watchers(
    capture_broadcasts: Callable[..., Any],
) -> None:
    node, token = await node_with_token()
    async with (
        connected(token) as (ws, _),
        capture_broadcasts(expected=1, group=node_group(node.pk)) as captured,
    ):
        await ws.send_json_to(batch(1, replay=True))
        await ws.send_json_to(batch(2))

    (message,) = captured.messages
    assert message["type"] == "node.batch"
    assert message["batch"]["seq"] == 2
    assert (message["batch"]["node_state"], message["batch"]["node_health"]) == (
        "ready",
        "healthy",
    )


async def test_xid_79_in_a_batch_makes_the_node_unhealthy_and_is_pushed(
    capture_broadcasts: Callable[..., Any],
) -> None:
    node, token = await node_with_token()
    async with (
        connected(token) as (ws, _),
        capture_broadcasts(group=node_group(node.pk)) as captured,
    ):
        await ws.send_json_to(batch(1, events=[xid_event(79, gpu=1)]))
        messages = [await captured.receive() for _ in range(3)]

    by_type = {m["type"]: m for m in messages}
    assert by_type["node.event"]["event"]["code"] == "79"
    assert by_type["node.event"]["event"]["rule_class"] == "node_reboot"
    assert by_type["node.state"]["health"] == "unhealthy"
    assert by_type["node.batch"]["batch"]["node_health"] == "unhealthy"
    assert (await database_sync_to_async(Node.objects.get)(pk=node.pk)).health == "unhealthy"


async def test_a_condition_raises_one_event_and_clears_it_when_it_ends() -> None:
    node, token = await node_with_token(gpus=1)
    hot = [reading(0, throttle=0x40)]
    async with connected(token, hello(gpus=1)) as (ws, _):
        for seq in range(1, 4):
            await ws.send_json_to(batch(seq, readings=hot))
        await ws.send_json_to(batch(4, readings=[reading(0)]))
        await ack_of(ws, 4)

    events = await database_sync_to_async(list)(HealthEvent.objects.filter(node=node))
    assert [(e.code, e.count, e.resolved_at is not None) for e in events] == [("slowdown", 1, True)]


async def test_clock_skew_is_measured_and_stored() -> None:
    node, token = await node_with_token()
    async with connected(token) as (ws, _):
        asked = await receive_type(ws, "time")
        await ws.send_json_to({"type": "time", "t0": asked["t0"], "t1": time.time() + 2.0})
        await ws.send_json_to(batch(1))
        await ack_of(ws, 1)

    skew = (await database_sync_to_async(Node.objects.get)(pk=node.pk)).clock_skew_ms
    assert skew == pytest.approx(2000, abs=250)


# Bad input ---------------------------------------------------------------------------------


async def send_garbage(ws: WebsocketCommunicator, max_bytes: int) -> None:
    await ws.send_to(text_data="{not json")
    await ws.send_to(text_data=json.dumps({"type": "heartbeat", "pad": "x" * (max_bytes + 1)}))
    await ws.send_json_to({**batch(1), "gpus": [{"i": "zero"}]})
    await ws.send_json_to({"type": "launch_missiles"})
    await ws.send_json_to([1, 2, 3])
    await ws.send_to(bytes_data=b"\x00\x01")


async def test_malformed_oversized_and_invalid_messages_leave_the_connection_usable(
    settings: Any,
) -> None:
    _, token = await node_with_token()
    async with connected(token) as (ws, _):
        await send_garbage(ws, settings.PODIUM["AGENT_MAX_MESSAGE_BYTES"])
        await ws.send_json_to(batch(2))

        await ack_of(ws, 2)


async def test_a_flooding_agent_is_throttled_without_starving_another(settings: Any) -> None:
    settings.PODIUM = {**settings.PODIUM, "AGENT_RATE": 20, "AGENT_BURST": 10}
    _, flooder_token = await node_with_token("flooder")
    _, token = await node_with_token("neighbour")
    async with (
        connected(flooder_token, hello("flooder")) as (noisy, _),
        connected(token, hello("neighbour")) as (quiet, _),
    ):
        for _ in range(300):
            await noisy.send_json_to({"type": "heartbeat", "ts": time.time()})
        await quiet.send_json_to(batch(1))
        await ack_of(quiet, 1, timeout=2)
        await asyncio.sleep(0.2)
        await noisy.send_json_to(batch(7))
        await ack_of(noisy, 7)


def test_the_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=5)

    assert [bucket.take() for _ in range(6)] == [True] * 5 + [False]
    bucket.at -= 0.2
    assert [bucket.take() for _ in range(3)] == [True, True, False]


# Redis -------------------------------------------------------------------------------------


@pytest.mark.integration
async def test_frames_update_last_heard_the_live_summary_and_the_dirty_set(
    in_memory_channel_layer: None,
) -> None:
    node, token = await node_with_token()
    async with connected(token) as (ws, _):
        before = time.time()
        await ws.send_json_to(batch(9))
        await ack_of(ws, 9)

    client = redis_client()
    assert float(client.hget(SEEN_KEY, node.pk)) >= before
    summary = json.loads(client.hget(LATEST_KEY, node.pk))
    assert (summary["id"], summary["seq"], summary["state"]) == (node.pk, 9, "ready")
    assert summary["gpus"][0] == [50.0, 50.0, 60.0, 350.0, 0]
    assert client.sismember(DIRTY_KEY, node.pk)


@pytest.mark.integration
async def test_refused_messages_are_counted_per_node(
    in_memory_channel_layer: None, settings: Any
) -> None:
    settings.PODIUM = {**settings.PODIUM, "AGENT_RATE": 1, "AGENT_BURST": 5}
    node, token = await node_with_token()
    async with connected(token) as (ws, _):
        await send_garbage(ws, settings.PODIUM["AGENT_MAX_MESSAGE_BYTES"])
        for _ in range(10):
            await ws.send_json_to({"type": "heartbeat", "ts": time.time()})
        await asyncio.sleep(0.5)

    assert int(redis_client().hget(REJECTED_KEY, node.pk)) >= 6 + 10 - 1
