"""The agent's connection against a small real websocket server playing the console."""

import asyncio
import json
import stat

import pytest

from podium.agent import protocol
from podium.agent.cli import run_agents
from podium.agent.client import EXIT_OK, EXIT_REFUSED, agent_url
from podium.agent.state import Credentials, CredentialStore
from tests.agent.conftest import agent_make, agent_stop


def _batches(frames: list[dict]) -> list[dict]:
    return [frame for frame in frames if frame["type"] == protocol.BATCH]


def test_agent_url_follows_the_server_scheme() -> None:
    assert agent_url("http://console:8000") == "ws://console:8000/ws/agent/"
    assert agent_url("https://podium.example.com/") == "wss://podium.example.com/ws/agent/"
    assert agent_url("https://example.com/podium") == "wss://example.com/podium/ws/agent/"
    with pytest.raises(ValueError, match="http"):
        agent_url("ftp://example.com")


async def test_hello_then_batches_with_increasing_seq(fake_console, tmp_path) -> None:
    agent = agent_make(fake_console, tmp_path)
    task = asyncio.create_task(agent.run())

    connection = await fake_console.wait_for(lambda: fake_console.connections)
    connection = connection[0]
    await fake_console.wait_for(lambda: len(connection.of_type("batch")) >= 5)
    await fake_console.wait_for(lambda: connection.of_type("heartbeat"))
    assert await agent_stop(agent, task) == EXIT_OK

    assert connection.authorization == "Bearer pdj_join"
    hello = connection.frames[0]
    assert hello["type"] == "hello"
    assert hello["protocol"] == protocol.PROTOCOL_VERSION
    assert hello["name"] == "node-a"
    assert hello["machine_id"] == "machine-1"
    assert hello["backend"] == "simulated"
    assert len(hello["gpus"]) == 2
    assert hello["gpus"][0]["simulated"] is True
    assert {
        "hostname",
        "cpu_count",
        "memory_total",
        "os",
        "kernel",
        "python",
        "driver_version",
    } <= set(hello["facts"])
    batches = connection.of_type("batch")
    seqs = [batch["seq"] for batch in batches]
    assert seqs == list(range(1, len(seqs) + 1))
    assert all(batch["replay"] is False for batch in batches)
    assert [reading["i"] for reading in batches[0]["gpus"]] == [0, 1]
    assert "cpu_percent" in batches[0]["host"]
    assert connection.ws.close_code == 1000  # a clean close on stop


async def test_join_saves_the_node_token_and_the_next_start_uses_it(fake_console, tmp_path) -> None:
    first = agent_make(fake_console, tmp_path)
    task = asyncio.create_task(first.run())
    await fake_console.wait_for(lambda: first.node_id == 7 and first.credentials)
    assert await agent_stop(first, task) == EXIT_OK

    path = tmp_path / "node-a.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {
        "server": fake_console.url,
        "node_id": 7,
        "name": "node-a",
        "node_token": "pdn_node",
    }

    second = agent_make(fake_console, tmp_path)
    task = asyncio.create_task(second.run())
    await fake_console.wait_for(lambda: len(fake_console.connections) == 2)
    await fake_console.wait_for(lambda: fake_console.connections[1].of_type("batch"))
    assert await agent_stop(second, task) == EXIT_OK
    assert fake_console.connections[1].authorization == "Bearer pdn_node"


async def test_a_refused_stored_token_joins_again_with_the_join_token(
    fake_console, tmp_path
) -> None:
    CredentialStore(tmp_path, "node-a").save(
        Credentials(server=fake_console.url, node_id=3, name="node-a", node_token="pdn_stale")
    )
    agent = agent_make(fake_console, tmp_path)
    task = asyncio.create_task(agent.run())

    await fake_console.wait_for(lambda: len(fake_console.connections) == 2)
    await fake_console.wait_for(lambda: agent.node_id == 7)
    assert await agent_stop(agent, task) == EXIT_OK
    auths = [c.authorization for c in fake_console.connections]
    assert auths == ["Bearer pdn_stale", "Bearer pdj_join"]
    assert CredentialStore(tmp_path, "node-a").load(fake_console.url).node_token == "pdn_node"


async def test_acks_trim_the_buffer_and_a_reconnect_replays_only_unacked(
    fake_console, tmp_path
) -> None:
    agent = agent_make(fake_console, tmp_path)
    task = asyncio.create_task(agent.run())
    first = (await fake_console.wait_for(lambda: fake_console.connections))[0]
    await fake_console.wait_for(lambda: len(first.of_type("batch")) >= 5)
    assert len(agent.buffer) <= 2  # acknowledged batches are dropped

    fake_console.acks = False
    acked = fake_console.last_stored
    await fake_console.wait_for(lambda: first.of_type("batch")[-1]["seq"] >= acked + 4)
    await fake_console.drop()
    second = (await fake_console.wait_for(lambda: fake_console.connections[1:]))[0]
    fake_console.acks = True
    await fake_console.wait_for(lambda: any(not b["replay"] for b in second.of_type("batch")))
    await fake_console.wait_for(lambda: len(second.of_type("batch")) >= 10)
    assert await agent_stop(agent, task) == EXIT_OK

    batches = second.of_type("batch")
    replays = [batch["seq"] for batch in batches if batch["replay"]]
    live = [batch["seq"] for batch in batches if not batch["replay"]]
    assert replays[0] == acked + 1  # nothing acknowledged is sent again
    assert replays == list(range(acked + 1, replays[-1] + 1))
    assert live[0] == replays[-1] + 1
    assert [b["seq"] for b in batches] == sorted(b["seq"] for b in batches)
    assert all(not batch["replay"] for batch in batches[len(replays) :])


@pytest.mark.parametrize(
    "code", [protocol.CLOSE_REVOKED, protocol.CLOSE_BAD_TOKEN, protocol.CLOSE_NAME_TAKEN]
)
async def test_a_refusal_stops_the_agent_with_status_78(fake_console, tmp_path, code) -> None:
    fake_console.close_with = code
    agent = agent_make(fake_console, tmp_path)

    assert await asyncio.wait_for(agent.run(), timeout=5) == EXIT_REFUSED
    assert len(fake_console.connections) == 1


async def test_other_close_codes_reconnect(fake_console, tmp_path) -> None:
    fake_console.close_with = protocol.CLOSE_REPLACED
    agent = agent_make(fake_console, tmp_path)
    task = asyncio.create_task(agent.run())

    await fake_console.wait_for(lambda: len(fake_console.connections) >= 3)
    assert await agent_stop(agent, task) == EXIT_OK


async def test_in_a_fleet_a_refused_node_stops_and_the_others_go_on(fake_console, tmp_path) -> None:
    fake_console.refuse = {"fleet-2": protocol.CLOSE_REVOKED}
    agents = [agent_make(fake_console, tmp_path, name=f"fleet-{n}") for n in (1, 2)]
    task = asyncio.create_task(run_agents(agents))

    def fleet_1_batches() -> int:
        named = [c for c in fake_console.connections if c.frames[0]["name"] == "fleet-1"]
        return sum(len(c.of_type("batch")) for c in named)

    await fake_console.wait_for(lambda: fleet_1_batches() >= 1)
    await asyncio.sleep(0.3)
    names = [c.frames[0]["name"] for c in fake_console.connections]
    assert names.count("fleet-2") == 1  # refused once, never retried
    assert fleet_1_batches() >= 3  # while the other node goes on
    for agent in agents:
        agent.stop()
    assert await asyncio.wait_for(task, timeout=5) == EXIT_OK


async def test_inject_fault_is_answered_with_fault_result(fake_console, tmp_path) -> None:
    agent = agent_make(fake_console, tmp_path)
    task = asyncio.create_task(agent.run())
    connection = (await fake_console.wait_for(lambda: fake_console.connections))[0]
    await fake_console.wait_for(lambda: connection.of_type("batch"))

    await fake_console.send(
        {"type": "inject_fault", "id": "f1", "gpu": 1, "fault": "xid", "code": 48}
    )
    await fake_console.send(
        {"type": "inject_fault", "id": "f2", "gpu": 9, "fault": "xid", "code": 48}
    )
    results = await fake_console.wait_for(
        lambda: len(connection.of_type("fault_result")) == 2 and connection.of_type("fault_result")
    )
    await fake_console.wait_for(lambda: any(b["events"] for b in connection.of_type("batch")))
    assert await agent_stop(agent, task) == EXIT_OK

    assert results[0]["id"] == "f1"
    assert results[0]["ok"] is True
    assert results[1] == {
        "type": "fault_result",
        "id": "f2",
        "ok": False,
        "detail": results[1]["detail"],
    }
    assert "no GPU 9" in results[1]["detail"]
    (event,) = next(b["events"] for b in connection.of_type("batch") if b["events"])
    assert (event["kind"], event["gpu"], event["code"]) == ("xid", 1, 48)


async def test_time_is_answered_with_t0_echoed(fake_console, tmp_path) -> None:
    agent = agent_make(fake_console, tmp_path)
    task = asyncio.create_task(agent.run())
    connection = (await fake_console.wait_for(lambda: fake_console.connections))[0]
    await fake_console.wait_for(lambda: connection.of_type("batch"))

    await fake_console.send({"type": "time", "t0": 1234.5})
    (reply,) = await fake_console.wait_for(lambda: connection.of_type("time"))
    assert await agent_stop(agent, task) == EXIT_OK

    assert reply["t0"] == 1234.5
    assert reply["t1"] > 1_600_000_000


async def test_malformed_console_messages_are_ignored(fake_console, tmp_path) -> None:
    agent = agent_make(fake_console, tmp_path)
    task = asyncio.create_task(agent.run())
    connection = (await fake_console.wait_for(lambda: fake_console.connections))[0]
    await fake_console.wait_for(lambda: connection.of_type("batch"))

    await connection.ws.send("not json")
    await connection.ws.send("[1, 2]")
    await fake_console.send({"type": "ack", "seq": "soon"})
    await fake_console.send({"type": "time", "t0": 1.0})
    await fake_console.wait_for(lambda: connection.of_type("time"))
    assert await agent_stop(agent, task) == EXIT_OK
    assert len(fake_console.connections) == 1
