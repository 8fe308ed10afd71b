"""How long `podium up` takes on an empty data directory, and again on the same data.

Starts the console in a subprocess (embedded Redis, web, worker, beat) on a free
port and times until GET /api/health reports every component ok, then stops it
with SIGINT and times the shutdown.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

TIMEOUT = 120


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
            return json.load(r)["status"] == "ok"
    except (urllib.error.URLError, OSError, ValueError):
        return False


def console_up(data_dir: Path, admin_password: str) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``podium up`` on a fresh data directory (embedded SQLite and Redis, no local
    agent) on a free port, and wait until it is healthy; the process and its port."""
    port = _free_port()
    env = {
        **os.environ,
        "PODIUM_DATA_DIR": str(data_dir),
        "PODIUM_PORT": str(port),
        "PODIUM_ADMIN_PASSWORD": admin_password,
        "PODIUM_LOCAL_AGENT": "0",
    }
    for key in ("REDIS_URL", "DATABASE_URL", "PODIUM_DEMO_NODES"):
        env.pop(key, None)
    console = subprocess.Popen(
        [sys.executable, "-m", "console", "up"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    started = time.monotonic()
    while not _healthy(port):
        if console.poll() is not None or time.monotonic() - started > TIMEOUT:
            console_down(console)
            raise RuntimeError("podium up did not become healthy")
        time.sleep(0.2)
    return console, port


def console_down(console: subprocess.Popen[bytes]) -> None:
    """Stop a console started by ``console_up`` (SIGINT, then SIGKILL after 30 s)."""
    if console.poll() is None:
        os.killpg(console.pid, signal.SIGINT)
        try:
            console.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(console.pid, signal.SIGKILL)
            console.wait()


def _one_start(data_dir: str) -> dict[str, float]:
    port = _free_port()
    env = {
        **os.environ,
        "PODIUM_DATA_DIR": data_dir,
        "PODIUM_PORT": str(port),
        "PODIUM_ADMIN_PASSWORD": "bench-Password-1",
    }
    env.pop("REDIS_URL", None)
    env.pop("DATABASE_URL", None)
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "console", "up"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not _healthy(port):
            if proc.poll() is not None or time.perf_counter() - started > TIMEOUT:
                raise RuntimeError("podium up did not become healthy")
            time.sleep(0.1)
        ready = time.perf_counter() - started
        stopping = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        stopped = time.perf_counter() - stopping
    finally:
        if proc.poll() is None:
            proc.kill()
    return {"healthy_after_s": round(ready, 2), "stopped_after_s": round(stopped, 2)}


def run() -> dict[str, Any]:
    data_dir = tempfile.mkdtemp(prefix="podium-bench-up-")
    first = _one_start(data_dir)
    second = _one_start(data_dir)
    return {
        "description": __doc__.strip().splitlines()[0],
        "results": {"fresh data": first, "same data again": second},
        "summary": {
            "fresh_healthy_s": first["healthy_after_s"],
            "again_healthy_s": second["healthy_after_s"],
            "stop_s": first["stopped_after_s"],
        },
    }
