"""Jobs over the agent's connection, against a small real websocket server playing the console."""

import asyncio
import json
import time

import psutil

from podium.agent import protocol
from podium.agent.client import EXIT_OK
from tests.agent.conftest import Connection, FakeConsole, agent_make, agent_stop


def _job_start(alloc: int, command: str, **fields) -> dict:
    return {
        "type": protocol.JOB_START,
        "alloc": alloc,
        "job": 1,
        "attempt": 1,
        "rank": 0,
        "command": command,
        "env": {},
        "workdir": None,
        "gpus": [0],
        "grace": 0.3,
        **fields,
    }


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def _connection(console: FakeConsole, number: int) -> Connection:
    """The ``number``-th connection (from 1), once it has been welcomed and sent a batch."""
    connections = await console.wait_for(lambda: console.connections[number - 1 :])
    connection = connections[0]
    await console.wait_for(lambda: connection.of_type("batch"))
    return connection


async def test_a_job_start_is_answered_with_started_output_and_exited(
    fake_console, tmp_path
) -> None:
    agent = agent_make(fake_console, tmp_path)
    task = asyncio.create_task(agent.run())
    connection = await _connection(fake_console, 1)
    assert connection.frames[0]["jobs"] == []

    await fake_console.send(_job_start(1, "echo hello; echo oops >&2; exit 2"))
    (exited,) = await fake_console.wait_for(lambda: connection.of_type("job_exited"))
    assert await agent_stop(agent, task) == EXIT_OK

    (started,) = connection.of_type("job_started")
    assert started["alloc"] == 1
    assert started["pgid"] == started["pid"]
    outputs = connection.of_type("job_output")
    assert [line for m in outputs for line in m["lines"]] == ["hello", "oops"]
    assert outputs[0]["seq"] == 0
    assert (exited["alloc"], exited["exit_code"], exited["signal"]) == (1, 2, None)
    assert exited["reason"] == ""
    assert exited["tail"] == "hello\noops\n"
    kinds = [f["type"] for f in connection.frames if f["type"].startswith("job_")]
    assert kinds.index("job_started") < kinds.index("job_output") < kinds.index("job_exited")


async def test_running_jobs_are_in_the_hello_and_unacked_exits_sent_after_a_reconnect(
    fake_console, tmp_path
) -> None:
    fake_console.fence_after = 30.0
    agent = agent_make(fake_console, tmp_path)
    task = asyncio.create_task(agent.run())
    first = await _connection(fake_console, 1)

    await fake_console.send(_job_start(2, "sleep 30"))
    await fake_console.send(_job_start(3, "exit 5"))
    (started,) = await fake_console.wait_for(lambda: first.of_type("job_started")[:1])
    await fake_console.wait_for(lambda: first.of_type("job_exited"))
    await fake_console.drop()  # a console restart, shorter than fence_after

    second = await _connection(fake_console, 2)
    assert second.frames[0]["jobs"] == [
        {"alloc": 2, "pid": started["pid"], "started": started["ts"]}
    ]
    (again,) = await fake_console.wait_for(lambda: second.of_type("job_exited"))
    assert (again["alloc"], again["exit_code"]) == (3, 5)
    assert _alive(started["pid"])

    await fake_console.send({"type": protocol.JOB_ACK, "alloc": 3})
    await fake_console.send({"type": protocol.JOB_SIGNAL, "alloc": 2, "signal": "term"})
    (ended,) = await fake_console.wait_for(
        lambda: [f for f in second.of_type("job_exited") if f["alloc"] == 2]
    )
    assert ended["signal"] == 15
    await fake_console.send({"type": protocol.JOB_ACK, "alloc": 2})
    await asyncio.sleep(0.1)
    await fake_console.drop()

    third = await _connection(fake_console, 3)
    await asyncio.sleep(0.2)
    assert await agent_stop(agent, task) == EXIT_OK
    assert third.frames[0]["jobs"] == []
    assert third.of_type("job_exited") == []  # acknowledged: forgotten
    state = json.loads((tmp_path / "node-a.jobs.json").read_text())
    assert state["running"] == []
    assert state["exits"] == []


async def test_an_agent_cut_off_from_the_console_kills_its_jobs(fake_console, tmp_path) -> None:
    fake_console.fence_after = 0.5
    agent = agent_make(fake_console, tmp_path)
    task = asyncio.create_task(agent.run())
    first = await _connection(fake_console, 1)
    await fake_console.send(_job_start(4, "sleep 30"))
    (started,) = await fake_console.wait_for(lambda: first.of_type("job_started"))
    assert started["pid"] in agent.backend._gpus[0].pids

    fake_console.close_with = 1012  # the console is gone: no welcome, nothing heard
    await fake_console.drop()
    cut_off = time.monotonic()
    await fake_console.wait_for(lambda: not _alive(started["pid"]), timeout=3)
    assert time.monotonic() - cut_off >= 0.4

    fake_console.close_with = None  # back again
    (back,) = await fake_console.wait_for(
        lambda: [c for c in fake_console.connections[1:] if c.of_type("batch")]
    )
    (exited,) = await fake_console.wait_for(lambda: back.of_type("job_exited"))
    assert await agent_stop(agent, task) == EXIT_OK
    assert back.frames[0]["jobs"] == []
    assert exited["alloc"] == 4
    assert exited["signal"] == 9
    assert exited["reason"].startswith("fenced: console unreachable for ")


async def test_stopping_the_agent_stops_its_jobs_and_the_next_start_reports_them(
    fake_console, tmp_path
) -> None:
    agent = agent_make(fake_console, tmp_path)
    task = asyncio.create_task(agent.run())
    first = await _connection(fake_console, 1)
    await fake_console.send(_job_start(5, "trap '' TERM; sleep 30"))
    (started,) = await fake_console.wait_for(lambda: first.of_type("job_started"))

    assert await agent_stop(agent, task) == EXIT_OK
    assert not _alive(started["pid"])

    again = agent_make(fake_console, tmp_path)
    task = asyncio.create_task(again.run())
    second = await _connection(fake_console, 2)
    (exited,) = await fake_console.wait_for(lambda: second.of_type("job_exited"))
    assert await agent_stop(again, task) == EXIT_OK
    assert exited["alloc"] == 5
    assert exited["reason"] == protocol.REASON_LOST


async def test_bad_job_messages_never_break_the_connection(fake_console, tmp_path) -> None:
    agent = agent_make(fake_console, tmp_path)
    task = asyncio.create_task(agent.run())
    connection = await _connection(fake_console, 1)

    await fake_console.send({"type": protocol.JOB_START, "alloc": "one"})
    await fake_console.send({"type": protocol.JOB_START, "alloc": 6, "command": 7})
    await fake_console.send({"type": protocol.JOB_SIGNAL, "alloc": 7, "signal": "kill"})
    await fake_console.send({"type": protocol.JOB_ACK, "alloc": None})
    exits = await fake_console.wait_for(
        lambda: len(connection.of_type("job_exited")) == 2 and connection.of_type("job_exited")
    )
    await fake_console.send({"type": "time", "t0": 1.0})
    await fake_console.wait_for(lambda: connection.of_type("time"))
    assert await agent_stop(agent, task) == EXIT_OK

    assert len(fake_console.connections) == 1
    assert exits[0]["alloc"] == 6
    assert exits[0]["reason"].startswith("start failed: bad field ")
    assert (exits[1]["alloc"], exits[1]["reason"]) == (7, protocol.REASON_UNKNOWN)
