"""Live telemetry at fleet scale: simulated nodes at 1 Hz into a running console, fleet viewers.

Starts ``podium up`` on a fresh data directory (embedded SQLite and Redis, no local
agent), joins one agent process simulating BENCH_NODES nodes of 8 GPUs and one
single 8-GPU agent, then opens BENCH_CLIENTS browser websockets on the fleet view.
Over BENCH_SECONDS it records, per fleet update a client receives, the delay from
the sample's timestamp to its arrival, the sequence gaps per node and client
(updates lost on the way), CPU and RSS of the web process and of both agent
processes, and GPU sample rows stored per second.
"""

import asyncio
import contextlib
import http.cookiejar
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import psutil
from websockets.asyncio.client import connect

from bench.startup import console_down, console_up

NODES = int(os.environ.get("BENCH_NODES", "125"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "50"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "30"))
WARMUP = float(os.environ.get("BENCH_WARMUP", "10"))
GPUS_PER_NODE = 8
ADMIN_PASSWORD = "bench-Password-1"
START_TIMEOUT = 120.0
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _api(base: str, method: str, path: str, token: str | None = None, body: Any = None) -> Any:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    with _NO_PROXY.open(request, timeout=30) as response:
        return json.load(response)


def _session_cookie(base: str) -> str:
    """Sign in as the admin through the login form; the session cookie for websockets."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(jar)
    )
    opener.open(base + "/login/", timeout=30).read()
    csrf = next(c.value for c in jar if c.name == "csrftoken")
    form = urllib.parse.urlencode(
        {"username": "admin", "password": ADMIN_PASSWORD, "csrfmiddlewaretoken": csrf}
    ).encode()
    request = urllib.request.Request(
        base + "/login/", data=form, headers={"Referer": base + "/login/"}
    )
    opener.open(request, timeout=30).read()
    return "; ".join(f"{c.name}={c.value}" for c in jar)


class Client:
    """One fleet viewer: records the delay of every node update and the gaps in its seqs."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.updates = 0
        self.gaps = 0
        self.last_seq: dict[int, int] = {}
        self.recording = False

    def take(self, frame: dict[str, Any], now: float) -> None:
        for node in frame.get("nodes", []):
            seq, ts = node.get("seq"), node.get("ts")
            if seq is None or ts is None:
                continue
            previous = self.last_seq.get(node["id"])
            self.last_seq[node["id"]] = seq
            if frame.get("kind") != "delta" or not self.recording:
                continue
            self.updates += 1
            self.latencies.append(now - ts)
            if previous is not None and seq > previous + 1:
                self.gaps += seq - previous - 1


async def _watch(url: str, cookie: str, origin: str, client: Client, stop: asyncio.Event) -> None:
    headers = {"Cookie": cookie, "Origin": origin}
    async with connect(url, additional_headers=headers, max_size=None) as socket:
        while not stop.is_set():
            try:
                raw = await asyncio.wait_for(socket.recv(), timeout=0.5)
            except TimeoutError:
                continue
            client.take(json.loads(raw), time.time())


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    return [proc, *proc.children(recursive=True)]


def _cpu_seconds(procs: list[psutil.Process]) -> float:
    return sum(p.cpu_times().user + p.cpu_times().system for p in procs)


def _cpu_rss(procs: dict[str, psutil.Process], seconds: float) -> dict[str, dict[str, float]]:
    """CPU (% of one core) and RSS of each process and its children over ``seconds``."""
    trees = {name: _tree(p) for name, p in procs.items()}
    start = {name: _cpu_seconds(tree) for name, tree in trees.items()}
    time.sleep(seconds)
    out = {}
    for name, tree in trees.items():
        used = _cpu_seconds(tree) - start[name]
        rss = sum(p.memory_info().rss for p in tree)
        out[name] = {
            "cpu_pct_of_core": round(100 * used / seconds, 2),
            "rss_mb": round(rss / 2**20, 1),
        }
    return out


def _rows(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        return conn.execute("SELECT count(*) FROM monitoring_gpusample").fetchone()[0]


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _measure(base: str, cookie: str, procs: dict[str, psutil.Process], db: Path) -> dict:
    ws_url = base.replace("http://", "ws://") + "/ws/monitoring/fleet/"
    stop = asyncio.Event()
    clients = [Client() for _ in range(CLIENTS)]
    tasks = [asyncio.create_task(_watch(ws_url, cookie, base, c, stop)) for c in clients]
    await asyncio.sleep(WARMUP)
    for client in clients:
        client.recording = True
    rows_before = await asyncio.to_thread(_rows, db)
    started = time.perf_counter()
    usage = await asyncio.to_thread(_cpu_rss, procs, SECONDS)
    rows_after = await asyncio.to_thread(_rows, db)
    elapsed = time.perf_counter() - started
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    latencies = [value for c in clients for value in c.latencies]
    return {
        "clients_connected": sum(1 for t in tasks if t.exception() is None),
        "updates_received": sum(c.updates for c in clients),
        "latency_ms": {
            "p50": round(1000 * statistics.median(latencies), 1) if latencies else None,
            "p99": round(1000 * _percentile(latencies, 0.99), 1),
            "max": round(1000 * max(latencies), 1) if latencies else None,
        },
        "dropped_updates": sum(c.gaps for c in clients),
        "processes": usage,
        "gpu_rows_per_s": round((rows_after - rows_before) / elapsed, 1),
    }


def _agent(
    base: str, token: str, state: Path, name: str, fleet: int, log: Path
) -> subprocess.Popen:
    argv = [sys.executable, "-m", "podium.agent", "--server", base, "--name", name]
    argv += ["--state-dir", str(state), "--simulate-gpus", str(GPUS_PER_NODE)]
    argv += ["--workload", "demo"]
    if fleet > 1:
        argv += ["--fleet", str(fleet)]
    env = {**os.environ, "PODIUM_AGENT_TOKEN": token}
    with log.open("ab") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)


def _wait_nodes(base: str, token: str, count: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        page = _api(base, "GET", "/api/nodes?state=ready&limit=500", token)
        if page["count"] >= count:
            return
        time.sleep(0.5)
    raise RuntimeError(f"fewer than {count} nodes became ready")


def run() -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="podium-bench-telemetry-"))
    data = root / "data"
    console, port = console_up(data, ADMIN_PASSWORD)
    base = f"http://127.0.0.1:{port}"
    agents: list[subprocess.Popen] = []
    try:
        token = _api(
            base, "POST", "/api/auth/token",
            body={"username": "admin", "password": ADMIN_PASSWORD, "name": "bench"},
        )["token"]  # fmt: skip
        join = _api(
            base, "POST", "/api/join-tokens", token, {"name": "bench", "max_uses": NODES + 1}
        )["token"]
        log = root / "agents.log"
        agents.append(_agent(base, join, root / "state", "fleet", NODES, log))
        agents.append(_agent(base, join, root / "state", "solo", 1, log))
        _wait_nodes(base, token, NODES + 1)
        web = psutil.Process(int((data / "run" / "web.pid").read_text()))
        procs = {
            "web": web,
            "worker (with its pool)": psutil.Process(
                int((data / "run" / "worker.pid").read_text())
            ),
            "beat": psutil.Process(int((data / "run" / "beat.pid").read_text())),
            f"agent process ({NODES} nodes)": psutil.Process(agents[0].pid),
            "agent (1 node, 8 GPUs)": psutil.Process(agents[1].pid),
        }
        cookie = _session_cookie(base)
        measured = asyncio.run(_measure(base, cookie, procs, data / "podium.sqlite3"))
    finally:
        for agent in agents:
            agent.send_signal(signal.SIGTERM)
        for agent in agents:
            with contextlib.suppress(subprocess.TimeoutExpired):
                agent.wait(timeout=10)
        console_down(console)
    solo = measured["processes"]["agent (1 node, 8 GPUs)"]
    return {
        "description": __doc__.strip().splitlines()[0],
        "setup": {
            "nodes": NODES + 1,
            "gpus": (NODES + 1) * GPUS_PER_NODE,
            "clients": CLIENTS,
            "seconds": SECONDS,
        },
        "results": measured,
        "summary": {
            "gpus": (NODES + 1) * GPUS_PER_NODE,
            "clients": measured["clients_connected"],
            "latency_p50_ms": measured["latency_ms"]["p50"],
            "latency_p99_ms": measured["latency_ms"]["p99"],
            "dropped": measured["dropped_updates"],
            "gpu_rows_per_s": measured["gpu_rows_per_s"],
            "agent_8gpu_cpu_pct": solo["cpu_pct_of_core"],
            "agent_8gpu_rss_mb": solo["rss_mb"],
        },
    }
