"""Facts about the host the agent runs on, sent once per connection in ``hello``."""

import hashlib
import os
import platform
import socket
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil


def agent_version() -> str:
    """The installed version of the ``podium`` distribution."""
    try:
        return metadata.version("podium")
    except metadata.PackageNotFoundError:
        return "unknown"


def _cpu_model() -> str:
    try:
        with Path("/proc/cpuinfo").open(encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() in {"model name", "Hardware", "Processor"} and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _os_name() -> str:
    try:
        release = platform.freedesktop_os_release()
    except OSError:
        return f"{platform.system()} {platform.release()}".strip()
    return release.get("PRETTY_NAME") or release.get("NAME", platform.system())


def host_facts() -> dict[str, Any]:
    """Hostname, CPU, memory, OS, kernel, Python and agent version (no GPU facts)."""
    return {
        "hostname": socket.gethostname(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count() or 0,
        "memory_total": psutil.virtual_memory().total,
        "os": _os_name(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "agent_version": agent_version(),
    }


def node_machine_id(machine: str, name: str) -> str:
    """A machine id per simulated node, so nodes sharing one host stay distinct."""
    return hashlib.sha256(f"{machine}:{name}".encode()).hexdigest()[:32]
