"""Agent processes for end-to-end tests: start, kill and cut them off from the console."""

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from tests.e2e.conftest import ROOT, Console

T = TypeVar("T")

# Fault timings for modules that kill nodes: a silent node is suspect after 3 s and lost
# after 5 s, a scheduling pass runs every second, and no local agent joins.
SUSPECT_AFTER = 3.0
LOST_AFTER = 5.0
PASS_INTERVAL = 1.0
# Sweeps run every second; an agent's last message may be up to a batch interval old.
DETECTION = LOST_AFTER + 1.0 + 1.0
FAULT_SETTINGS = {
    "PODIUM_NODE_SUSPECT_AFTER": str(SUSPECT_AFTER),
    "PODIUM_NODE_LOST_AFTER": str(LOST_AFTER),
    "PODIUM_SCHEDULER_INTERVAL": str(PASS_INTERVAL),
    "PODIUM_TELEMETRY_FLUSH_INTERVAL": "1",
    "PODIUM_LOCAL_AGENT": "0",
}


@dataclass
class Agents:
    """Agent processes this module started, by node name."""

    console: Console
    state_dir: Path
    log_dir: Path
    join_token: str
    procs: dict[str, subprocess.Popen[bytes]]

    def start(self, name: str, server: str | None = None) -> None:
        """Start the agent of node ``name``, talking to ``server`` (the console's URL)."""
        argv = [sys.executable, "-m", "podium.agent", "--server", server or self.console.url]
        argv += ["--name", name, "--state-dir", str(self.state_dir), "--simulate-gpus", "8"]
        env = {**self.console.env, "PODIUM_AGENT_TOKEN": self.join_token}
        with (self.log_dir / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        """SIGTERM every agent, then SIGKILL those still running after 10 s."""
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"{what} did not happen within {timeout:g} s (last: {last!r})", pytrace=False)


def nodes_by_name(console: Console, token: str) -> dict[str, dict]:
    status, body = console.api("GET", "/api/nodes?limit=500", token=token)
    assert status == 200, body
    return {node["name"]: node for node in body["items"]}


@dataclass
class Partition:
    """A TCP relay between agents and the console that can be cut, as a network partition
    would: after ``cut`` both sides stay connected but hear nothing more."""

    target_port: int
    server: socket.socket = field(init=False)
    cut_off: threading.Event = field(default_factory=threading.Event)
    sockets: list[socket.socket] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        """The console's URL through the relay."""
        return f"http://127.0.0.1:{self.server.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                inbound, _ = self.server.accept()
            except OSError:
                return
            outbound = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets += [inbound, outbound]
            for source, sink in ((inbound, outbound), (outbound, inbound)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if not self.cut_off.is_set():
                    sink.sendall(data)
        except OSError:
            return

    def cut(self) -> None:
        """Drop everything from now on, in both directions."""
        self.cut_off.set()

    def close(self) -> None:
        self.server.close()
        for sock in self.sockets:
            sock.close()


def nodes_ready(console: Console, token: str, names: tuple[str, ...]) -> bool:
    """Whether every named node is ready."""
    nodes = nodes_by_name(console, token)
    return all(nodes.get(n, {}).get("state") == "ready" for n in names)


@contextlib.contextmanager
def agents_running(
    console: Console, token: str, names: tuple[str, ...], root: Path
) -> Iterator[Agents]:
    """Join one simulated 8-GPU agent per name with a fresh join token; stop them after."""
    status, body = console.api(
        "POST", "/api/join-tokens", token=token, body={"name": "e2e", "max_uses": 20}
    )
    assert status == 201, body
    running = Agents(console, root / "state", root, body["token"], {})
    try:
        for name in names:
            running.start(name)
        wait_for(lambda: nodes_ready(console, token, names), 30, "every agent's node ready")
        yield running
    finally:
        running.stop_all()
