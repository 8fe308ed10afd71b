"""``podium agent`` as a process: help, exit statuses, signals, fleets, no Django."""

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

from podium.agent import protocol
from tests.agent.conftest import FakeConsole

PODIUM = Path(sys.executable).parent / "podium"


async def _start(console: FakeConsole, tmp_path: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "podium.agent",
        "--server",
        console.url,
        "--token",
        console.join_token,
        "--state-dir",
        str(tmp_path),
        "--log-level",
        "warning",
        *args,
        stderr=asyncio.subprocess.PIPE,
    )


def test_help_works_without_the_console() -> None:
    result = subprocess.run(
        [str(PODIUM), "agent", "--help"], capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stderr
    assert "usage: podium agent" in result.stdout
    assert "--simulate-gpus" in result.stdout


def test_the_agent_never_imports_django() -> None:
    code = (
        "import sys\n"
        "import podium.cli, podium.agent.cli, podium.agent.client, podium.agent.backends.nvml\n"
        "import podium.agent.backends.simulated, podium.agent.backends.host\n"
        "forbidden = {'django', 'apps', 'console', 'channels', 'celery', 'ninja'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in forbidden))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "[]"


def test_without_a_token_it_says_so(tmp_path) -> None:
    result = subprocess.run(
        [str(PODIUM), "agent", "--server", "http://127.0.0.1:9", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )

    assert result.returncode == 2
    assert "join token" in result.stderr


async def test_sigterm_closes_cleanly_and_exits_0(fake_console, tmp_path) -> None:
    process = await _start(fake_console, tmp_path, "--simulate-gpus", "2", "--name", "n1")
    try:
        connection = (await fake_console.wait_for(lambda: fake_console.connections))[0]
        await fake_console.wait_for(lambda: len(connection.of_type("batch")) >= 2)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=5) == 0
    finally:
        if process.returncode is None:
            process.kill()
    assert connection.ws.close_code == 1000
    assert (tmp_path / "n1.json").exists()


async def test_a_revoked_node_exits_78(fake_console, tmp_path) -> None:
    fake_console.close_with = protocol.CLOSE_REVOKED
    process = await _start(fake_console, tmp_path, "--simulate-gpus", "1", "--name", "n1")
    try:
        status = await asyncio.wait_for(process.wait(), timeout=10)
    finally:
        if process.returncode is None:
            process.kill()
    stderr = (await process.stderr.read()).decode()

    assert status == 78
    assert "revoked" in stderr


async def test_a_fleet_runs_simulated_nodes_in_one_process(fake_console, tmp_path) -> None:
    process = await _start(fake_console, tmp_path, "--fleet", "3", "--name", "demo")
    try:

        def nodes_batching() -> set[str]:
            return {c.frames[0]["name"] for c in fake_console.connections if c.of_type("batch")}

        await fake_console.wait_for(lambda: len(nodes_batching()) == 3, timeout=10)
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), timeout=5) == 0
    finally:
        if process.returncode is None:
            process.kill()

    assert nodes_batching() == {"demo-1", "demo-2", "demo-3"}
    hellos = [c.frames[0] for c in fake_console.connections]
    assert all(len(hello["gpus"]) == 8 for hello in hellos)
    assert len({hello["machine_id"] for hello in hellos}) == 3
    assert len({hello["gpus"][0]["uuid"] for hello in hellos}) == 3
