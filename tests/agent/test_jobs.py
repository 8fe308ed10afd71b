"""The job runner with real processes: start, output, exit, signals, state file, fencing."""

import asyncio
import itertools
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from podium.agent import protocol
from podium.agent.backends.simulated import SimulatedBackend
from podium.agent.jobmessages import parse_job_start
from podium.agent.jobs import JobRunner


class Console:
    """What the client would send to the console: every message of the runner's outbox."""

    def __init__(self, runner: JobRunner) -> None:
        self.runner = runner
        self.messages: list[dict[str, Any]] = []
        self._task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        while True:
            self.messages.append(await self.runner.outbox.get())

    def of(self, kind: str, alloc: int | None = None) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind and alloc in (None, m.get("alloc"))]

    async def wait_for(self, condition: Callable[[], Any], timeout: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout
        while not (result := condition()):
            if time.monotonic() > deadline:
                pytest.fail("waited in vain")
            await asyncio.sleep(0.01)
        return result

    async def exited(self, alloc: int, timeout: float = 5.0) -> dict[str, Any]:
        found = await self.wait_for(lambda: self.of(protocol.JOB_EXITED, alloc), timeout)
        return found[0]

    async def started(self, alloc: int) -> dict[str, Any]:
        return (await self.wait_for(lambda: self.of(protocol.JOB_STARTED, alloc)))[0]

    def lines(self, alloc: int) -> list[str]:
        return [line for m in self.of(protocol.JOB_OUTPUT, alloc) for line in m["lines"]]

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def job_start(alloc: int, command: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": protocol.JOB_START,
        "alloc": alloc,
        "job": 100 + alloc,
        "attempt": 1,
        "rank": 0,
        "command": command,
        "env": {},
        "workdir": None,
        "gpus": [],
        "grace": 5.0,
        **fields,
    }


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def make_runner(state_dir: Path, secrets: tuple[str, ...] = ()) -> JobRunner:
    backend = SimulatedBackend(node_name="node-a", count=4)
    return JobRunner(state_dir=state_dir, name="node-a", backend=backend, secrets=lambda: secrets)


@pytest.fixture
async def runner(tmp_path: Path) -> AsyncIterator[JobRunner]:
    """A connected runner with its clock running; stopped (and its jobs too) at the end."""
    runner = make_runner(tmp_path)
    runner.recover()
    runner.connected()
    clock = asyncio.create_task(runner.run())
    yield runner
    await runner.close()
    clock.cancel()
    await asyncio.gather(clock, return_exceptions=True)


@pytest.fixture
async def console(runner: JobRunner) -> AsyncIterator[Console]:
    console = Console(runner)
    yield console
    await console.close()


async def test_start_runs_the_command_in_its_own_process_group(runner, console) -> None:
    await runner.start(job_start(1, "echo hi; sleep 30"))
    started = await console.started(1)

    assert started["pid"] > 0
    assert started["pgid"] == started["pid"] == os.getpgid(started["pid"])
    assert os.getpgid(started["pid"]) != os.getpgid(0)
    assert started["ts"] == pytest.approx(time.time(), abs=5)
    assert alive(started["pid"])
    assert runner.running() == [{"alloc": 1, "pid": started["pid"], "started": started["ts"]}]
    assert await console.wait_for(lambda: console.lines(1)) == ["hi"]
    state = json.loads((runner.path).read_text())
    assert [entry["alloc"] for entry in state["running"]] == [1]
    assert stat.S_IMODE(runner.path.stat().st_mode) == 0o600


async def test_processes_of_a_job_are_known_by_their_group(runner, console) -> None:
    await runner.start(job_start(7, "sleep 30 & sleep 30"))
    started = await console.started(7)
    shell = psutil.Process(started["pid"])
    child = await console.wait_for(lambda: shell.children())

    assert runner.job_of(started["pid"]) == 107
    assert runner.job_of(child[0].pid) == 107
    assert runner.job_of(os.getpid()) is None
    runner.signal({"type": protocol.JOB_SIGNAL, "alloc": 7, "signal": "kill"})
    await console.exited(7)
    assert runner.job_of(started["pid"]) is None


async def test_output_is_batched_with_line_numbers(runner, console, tmp_path) -> None:
    command = 'i=0; while [ $i -lt 450 ]; do echo "line $i"; i=$((i+1)); done; sleep 30'
    await runner.start(job_start(2, command))

    await console.wait_for(lambda: len(console.lines(2)) == 450)
    messages = console.of(protocol.JOB_OUTPUT, 2)
    assert [(m["seq"], len(m["lines"])) for m in messages] == [(0, 200), (200, 200), (400, 50)]
    assert console.lines(2) == [f"line {n}" for n in range(450)]
    gaps = [b["ts"] - a["ts"] for a, b in itertools.pairwise(messages)]
    assert all(gap >= 0.45 for gap in gaps)  # one message per allocation per 0.5 s
    log_lines = (tmp_path / "jobs" / "2.log").read_text().splitlines()
    assert log_lines == [f"line {n}" for n in range(450)]


async def test_exit_is_reported_after_the_last_output_with_the_tail(runner, console) -> None:
    command = "echo out; echo err >&2; printf '%5000s\\n' long; printf 'no newline'; exit 3"
    await runner.start(job_start(3, command))
    exited = await console.exited(3)

    assert exited["exit_code"] == 3
    assert exited["signal"] is None
    assert exited["reason"] == ""
    lines = console.lines(3)
    assert lines[:2] == ["out", "err"]
    assert len(lines[2]) == protocol.OUTPUT_LINE_MAX_CHARS  # cut
    assert lines[3] == "no newline"
    assert console.messages.index(exited) > console.messages.index(
        console.of(protocol.JOB_OUTPUT, 3)[-1]
    )
    assert exited["tail"].endswith("long\nno newline")
    assert len(exited["tail"].encode()) <= protocol.TAIL_MAX_BYTES
    assert runner.running() == []


async def test_term_ends_the_job(runner, console) -> None:
    await runner.start(job_start(4, "sleep 30"))
    await console.started(4)

    runner.signal({"type": "job_signal", "alloc": 4, "signal": "term", "grace": 5})
    exited = await console.exited(4)
    assert (exited["exit_code"], exited["signal"], exited["reason"]) == (None, 15, "")


async def test_term_escalates_to_kill_after_the_grace(runner, console) -> None:
    await runner.start(job_start(5, "trap '' TERM; echo ready; sleep 30", grace=0.3))
    await console.wait_for(lambda: console.lines(5))

    sent = time.monotonic()
    runner.signal({"type": "job_signal", "alloc": 5, "signal": "term", "grace": None})
    exited = await console.exited(5)
    assert 0.3 <= time.monotonic() - sent < 2
    assert (exited["signal"], exited["reason"]) == (9, protocol.REASON_KILLED_AFTER_GRACE)


SAVES_ON_TERM = (
    "import signal, sys, time\n"
    "def save(*_):\n"
    "    time.sleep(0.5)\n"
    "    print('checkpoint saved', flush=True)\n"
    "    sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, save)\n"
    "print('ready', flush=True)\n"
    "time.sleep(30)\n"
)


async def test_after_a_term_the_process_behind_the_shell_gets_its_grace_to_finish(
    runner, console, tmp_path
) -> None:
    script = tmp_path / "train.py"
    script.write_text(SAVES_ON_TERM)
    # The shell runs the script as a child (the trailing command keeps it from exec'ing)
    # and dies of the SIGTERM at once; the script saves for half a second.
    await runner.start(job_start(50, f"{sys.executable} {script}; echo after"))
    await console.wait_for(lambda: console.lines(50))

    runner.signal({"type": "job_signal", "alloc": 50, "signal": "term", "grace": 5})
    exited = await console.exited(50)

    assert console.lines(50) == ["ready", "checkpoint saved"]
    assert exited["signal"] == 15
    assert exited["reason"] == ""


async def test_kill_takes_the_whole_process_group(runner, console) -> None:
    await runner.start(job_start(6, "sleep 30 & echo $!; wait"))
    grandchild = int((await console.wait_for(lambda: console.lines(6)))[0])
    assert alive(grandchild)

    runner.signal({"type": "job_signal", "alloc": 6, "signal": "kill", "grace": None})
    exited = await console.exited(6)
    assert exited["signal"] == 9
    await console.wait_for(lambda: not alive(grandchild))


async def test_nothing_of_the_group_outlives_the_job(runner, console) -> None:
    await runner.start(job_start(7, "sleep 30 & echo $!; exit 0"))
    exited = await console.exited(7)

    assert exited["exit_code"] == 0
    grandchild = int(console.lines(7)[0])
    await console.wait_for(lambda: not alive(grandchild))


async def test_a_repeated_job_start_never_starts_a_second_process(runner, console) -> None:
    await runner.start(job_start(8, "sleep 30"))
    await runner.start(job_start(8, "sleep 30"))
    first, second = await console.wait_for(
        lambda: len(console.of(protocol.JOB_STARTED, 8)) == 2 and console.of("job_started", 8)
    )
    assert first == second
    assert len(runner.running()) == 1

    runner.signal({"type": "job_signal", "alloc": 8, "signal": "kill", "grace": None})
    exited = await console.exited(8)
    await runner.start(job_start(8, "sleep 30"))
    again = await console.wait_for(
        lambda: len(console.of(protocol.JOB_EXITED, 8)) == 2 and console.of("job_exited", 8)
    )
    assert again == [exited, exited]  # the stored exit again
    assert runner.running() == []

    runner.ack({"type": "job_ack", "alloc": 8})
    await runner.start(job_start(8, "sleep 30"))
    await asyncio.sleep(0.05)
    assert runner.running() == []
    assert len(console.of(protocol.JOB_EXITED, 8)) == 2


async def test_a_signal_for_an_unknown_alloc_is_answered_so_it_can_be_settled(
    runner, console
) -> None:
    runner.signal({"type": "job_signal", "alloc": 404, "signal": "term", "grace": 1})

    exited = await console.exited(404)
    assert exited["exit_code"] is None
    assert exited["signal"] is None
    assert exited["reason"] == protocol.REASON_UNKNOWN


async def test_the_job_sees_its_gpus_and_env_but_not_the_agent_token(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PODIUM_AGENT_TOKEN", "pdj_secret")
    monkeypatch.setenv("NODE_SECRET", "pdn_node")
    monkeypatch.setenv("AGENT_ONLY", "kept")
    runner = make_runner(tmp_path, secrets=("pdn_node",))
    runner.connected()
    console = Console(runner)
    clock = asyncio.create_task(runner.run())
    command = (
        'echo "$CUDA_VISIBLE_DEVICES|$PODIUM_ALLOCATION_ID|$FOO|$AGENT_ONLY|'
        '${PODIUM_AGENT_TOKEN-none}|${NODE_SECRET-none}|$(pwd)"; sleep 0.3'
    )
    try:
        await runner.start(job_start(9, command, gpus=[1, 3], env={"FOO": "bar baz"}))
        started = await console.started(9)
        assert started["pid"] in runner.backend._gpus[1].pids  # simulated GPUs follow it
        await console.exited(9)
        await runner.start(job_start(10, 'echo "[${CUDA_VISIBLE_DEVICES-unset}]"'))
        await console.exited(10)
    finally:
        await console.close()
        clock.cancel()

    workdir = tmp_path / "jobs" / "9"
    assert console.lines(9) == [f"1,3|9|bar baz|kept|none|none|{workdir}"]
    assert console.lines(10) == ["[]"]
    assert not runner.backend._gpus[1].pids  # detached at the exit


async def test_bad_job_start_fields_are_refused_without_crashing(runner, console) -> None:
    await runner.start({"type": "job_start", "command": "true"})  # no alloc: ignored
    await runner.start(job_start(11, "true", gpus="all"))
    await runner.start(job_start(12, "true", workdir="/nonexistent/podium"))
    runner.signal({"type": "job_signal", "alloc": "x", "signal": "term"})
    runner.signal({"type": "job_signal", "alloc": 11, "signal": "hup"})
    runner.ack({"type": "job_ack"})

    bad_gpus = await console.exited(11)
    no_dir = await console.exited(12)
    assert bad_gpus["reason"] == "start failed: bad field 'gpus': must be a list of GPU indices"
    assert no_dir["reason"].startswith("start failed: ")
    assert "/nonexistent/podium" in no_dir["reason"]
    assert len(console.messages) == 2


def test_parse_job_start_names_the_bad_field() -> None:
    spec = parse_job_start(job_start(1, "true", gpus=[0, 2], grace=1))
    assert (spec.alloc, spec.gpus, spec.grace, spec.workdir) == (1, [0, 2], 1.0, None)
    for field, value in [
        ("job", "1"),
        ("rank", True),
        ("command", ""),
        ("env", {"A": 1}),
        ("gpus", [-1]),
        ("grace", None),
        ("workdir", 5),
    ]:
        with pytest.raises(ValueError, match=f"'{field}'"):
            parse_job_start({**job_start(1, "true"), field: value})


async def test_exits_are_kept_on_disk_and_sent_again_until_acked(tmp_path) -> None:
    first = make_runner(tmp_path)
    first.connected()
    console = Console(first)
    await first.start(job_start(13, "echo bye; exit 4"))
    exited = await console.exited(13)
    await console.close()

    second = make_runner(tmp_path)  # the agent restarted
    second.recover()
    second.connected()
    assert second.outbox.get_nowait() == exited
    second.disconnected()
    second.connected()  # every reconnect sends it again
    assert second.outbox.get_nowait() == exited
    assert second.outbox.empty()

    second.ack({"type": "job_ack", "alloc": 13})
    assert json.loads(second.path.read_text())["exits"] == []
    third = make_runner(tmp_path)
    third.recover()
    third.connected()
    assert third.outbox.empty()


async def test_output_made_while_disconnected_is_sent_once_reconnected(
    runner, console, tmp_path
) -> None:
    runner.disconnected()
    await runner.start(job_start(14, "echo one; echo two; sleep 0.5; echo three; sleep 30"))
    log_file = tmp_path / "jobs" / "14.log"
    await console.wait_for(lambda: log_file.read_text() == "one\ntwo\n")  # kept on disk
    runner.connected()

    await console.wait_for(lambda: len(console.of(protocol.JOB_OUTPUT, 14)) == 2)
    lines = [(m["seq"], m["lines"]) for m in console.of(protocol.JOB_OUTPUT, 14)]
    assert lines == [(0, ["one", "two"]), (2, ["three"])]
    assert console.of(protocol.JOB_STARTED, 14) == []  # the hello lists running jobs


async def test_leftovers_of_a_previous_life_are_killed_at_startup(tmp_path) -> None:
    leftover = subprocess.Popen(["sh", "-c", "sleep 30 & wait"], start_new_session=True)
    stranger = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        created = psutil.Process(leftover.pid).create_time()
        (tmp_path / "jobs").mkdir()
        (tmp_path / "jobs" / "15.log").write_text("step 41\nstep 42\n")
        running = [
            {"alloc": 15, "pid": leftover.pid, "pgid": leftover.pid, "create_time": created},
            # same pid as a process that runs now, but not the same process: left alone
            {"alloc": 16, "pid": stranger.pid, "pgid": stranger.pid, "create_time": 1.0},
        ]
        (tmp_path / "node-a.jobs.json").write_text(json.dumps({"running": running}))
        grandchildren = psutil.Process(leftover.pid).children()

        runner = make_runner(tmp_path)
        runner.recover()

        assert leftover.wait(timeout=5) == -9
        assert all(not alive(child.pid) for child in grandchildren)
        assert stranger.poll() is None
        runner.connected()
        lost = [runner.outbox.get_nowait() for _ in range(2)]
        assert {m["alloc"]: m["reason"] for m in lost} == {
            15: protocol.REASON_LOST,
            16: protocol.REASON_LOST,
        }
        assert lost[0]["tail"] == "step 41\nstep 42\n"
        assert json.loads(runner.path.read_text())["running"] == []
    finally:
        for process in (leftover, stranger):
            process.kill()
            process.wait()


async def test_fencing_kills_jobs_after_fence_after_without_contact(runner, console) -> None:
    runner.fence_after = 0.5
    await runner.start(job_start(17, "sleep 30"))
    pid = (await console.started(17))["pid"]

    for _ in range(8):  # 0.8 s, longer than fence_after, with contact all along
        await asyncio.sleep(0.1)
        runner.heard()
    silent_from = time.monotonic()
    assert alive(pid)

    exited = await console.exited(17)
    assert 0.5 <= time.monotonic() - silent_from < 1.5
    assert exited["signal"] == 9
    assert exited["reason"].startswith("fenced: console unreachable for ")


async def test_without_fence_after_jobs_are_never_fenced(runner, console) -> None:
    await runner.start(job_start(18, "sleep 30"))
    pid = (await console.started(18))["pid"]
    runner._last_heard -= 3600

    await asyncio.sleep(0.3)
    assert alive(pid)


async def test_close_stops_every_job_and_records_the_exits(tmp_path) -> None:
    runner = make_runner(tmp_path)
    runner.connected()
    console = Console(runner)
    clock = asyncio.create_task(runner.run())
    await runner.start(job_start(19, "sleep 30"))
    await runner.start(job_start(20, "trap '' TERM; echo ready; sleep 30", grace=0.3))
    pids = [(await console.started(alloc))["pid"] for alloc in (19, 20)]
    await console.wait_for(lambda: console.lines(20))
    runner.disconnected()

    await asyncio.wait_for(runner.close(), timeout=5)
    await console.close()
    clock.cancel()

    assert not any(alive(pid) for pid in pids)
    state = json.loads(runner.path.read_text())
    assert state["running"] == []
    exits = {m["alloc"]: m for m in state["exits"]}
    assert exits[19]["signal"] == 15
    assert exits[20]["signal"] == 9
    assert {m["reason"] for m in exits.values()} == {protocol.REASON_LOST}
    await runner.start(job_start(21, "true"))
    assert json.loads(runner.path.read_text())["exits"][-1]["reason"].startswith("start failed: ")
