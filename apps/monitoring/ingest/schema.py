"""Validation of agent messages: untrusted JSON in, checked values out. No database.

Anything malformed raises ``ProtocolError`` naming the field; the consumer counts it and
carries on. Readings absent or null stay None: missing is not zero.
"""

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

from podium.agent.protocol import (
    EVENT_KINDS,
    GPU_READING_KEYS,
    HOST_READING_KEYS,
    PROTOCOL_VERSION,
)

MAX_GPUS = 64
MAX_EVENTS = 64
MAX_PROCS = 256
MAX_NVLINK_PEERS = 32
# A batch's time may lag this far behind the console (replays after an outage) …
MAX_BATCH_AGE = 7 * 24 * 3600.0
# … and run this far ahead of it (a skewed agent clock).
MAX_BATCH_AHEAD = 3600.0
MAX_NUMBER = 1e18
BOOL_READINGS = frozenset({"remap_pending", "remap_failure"})
NUMBER_READINGS = tuple(k for k in GPU_READING_KEYS if k not in BOOL_READINGS)
BACKENDS = ("nvml", "simulated", "none")
FACT_KEYS = (
    "hostname",
    "cpu_model",
    "cpu_count",
    "memory_total",
    "os",
    "kernel",
    "python",
    "driver_version",
    "cuda_version",
    "agent_version",
)
NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class ProtocolError(ValueError):
    """A message that breaks the agent protocol; ``field`` names the culprit."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as the agent's hello describes it."""

    index: int
    uuid: str = ""
    name: str = ""
    serial: str = ""
    memory_total_mib: int | None = None
    pci_bus_id: str = ""
    nvlink_peers: tuple[str, ...] = ()
    simulated: bool = False


@dataclass(frozen=True)
class Hello:
    """The first frame of every connection."""

    name: str
    machine_id: str
    agent_version: str
    backend: str
    gpu_status: str
    facts: dict[str, Any]
    gpus: tuple[GpuInfo, ...]
    time: float | None


@dataclass(frozen=True)
class Batch:
    """One telemetry batch, checked: readings per GPU index, host readings, events."""

    seq: int
    ts: float
    replay: bool
    gpus: dict[int, dict[str, Any]]
    host: dict[str, Any]
    events: tuple[dict[str, Any], ...] = field(default=())


def _int(value: Any, name: str, *, low: int = 0, high: int = 2**62) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError("must be an integer", field=name)
    if not low <= value <= high:
        raise ProtocolError(f"must be between {low} and {high}", field=name)
    return value


def _number(value: Any, name: str) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError("must be a number or null", field=name)
    if not math.isfinite(value) or abs(value) > MAX_NUMBER:
        raise ProtocolError("must be a finite number", field=name)
    return value


def _text(value: Any, name: str, *, max_length: int, required: bool = False) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ProtocolError("must be a string", field=name)
    if len(value) > max_length:
        raise ProtocolError(f"is longer than {max_length} characters", field=name)
    if required and not value.strip():
        raise ProtocolError("is required", field=name)
    return value.strip()


def _bool(value: Any, name: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ProtocolError("must be true, false or null", field=name)


def _list(value: Any, name: str, max_items: int) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ProtocolError("must be a list", field=name)
    if len(value) > max_items:
        raise ProtocolError(f"has more than {max_items} items", field=name)
    return value


def _dict(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError("must be an object", field=name)
    return value


def hello_validate(message: dict[str, Any]) -> Hello:
    """The checked hello, or ProtocolError."""
    if message.get("type") != "hello":
        raise ProtocolError("the first message must be a hello", field="type")
    if message.get("protocol") != PROTOCOL_VERSION:
        raise ProtocolError(f"only protocol {PROTOCOL_VERSION} is spoken", field="protocol")
    name = _text(message.get("name"), "name", max_length=128, required=True)
    if not NODE_NAME.match(name):
        raise ProtocolError("letters, digits, dots, dashes and underscores only", field="name")
    backend = _text(message.get("backend"), "backend", max_length=16) or "none"
    if backend not in BACKENDS:
        raise ProtocolError(f"must be one of {', '.join(BACKENDS)}", field="backend")
    raw_facts = _dict(message.get("facts"), "facts")
    facts: dict[str, Any] = {}
    for key in FACT_KEYS:
        value = raw_facts.get(key)
        if isinstance(value, str):
            facts[key] = _text(value, f"facts.{key}", max_length=200)
        elif value is not None:
            facts[key] = _number(value, f"facts.{key}")
    gpus = []
    seen: set[int] = set()
    for position, raw in enumerate(_list(message.get("gpus"), "gpus", MAX_GPUS)):
        where = f"gpus[{position}]"
        raw = _dict(raw, where)
        index = _int(raw.get("index"), f"{where}.index", high=MAX_GPUS - 1)
        if index in seen:
            raise ProtocolError("repeats a GPU index", field=f"{where}.index")
        seen.add(index)
        memory = raw.get("memory_total_mib")
        peers = _list(raw.get("nvlink_peers"), f"{where}.nvlink_peers", MAX_NVLINK_PEERS)
        gpus.append(
            GpuInfo(
                index=index,
                uuid=_text(raw.get("uuid"), f"{where}.uuid", max_length=96),
                name=_text(raw.get("name"), f"{where}.name", max_length=128),
                serial=_text(raw.get("serial"), f"{where}.serial", max_length=64),
                memory_total_mib=(
                    None if memory is None else _int(memory, f"{where}.memory_total_mib")
                ),
                pci_bus_id=_text(raw.get("pci_bus_id"), f"{where}.pci_bus_id", max_length=32),
                nvlink_peers=tuple(_text(p, f"{where}.nvlink_peers", max_length=96) for p in peers),
                simulated=bool(_bool(raw.get("simulated"), f"{where}.simulated")),
            )
        )
    return Hello(
        name=name,
        machine_id=_text(message.get("machine_id"), "machine_id", max_length=64),
        agent_version=_text(message.get("agent_version"), "agent_version", max_length=32),
        backend=backend,
        gpu_status=_text(message.get("gpu_status"), "gpu_status", max_length=200),
        facts=facts,
        gpus=tuple(sorted(gpus, key=lambda g: g.index)),
        time=_number(message.get("time"), "time"),
    )


def _reading(raw: Any, where: str) -> tuple[int, dict[str, Any]]:
    raw = _dict(raw, where)
    index = _int(raw.get("i"), f"{where}.i", high=MAX_GPUS - 1)
    reading: dict[str, Any] = {}
    for key in NUMBER_READINGS:
        if key in raw:
            reading[key] = _number(raw[key], f"{where}.{key}")
    for key in BOOL_READINGS:
        if key in raw:
            reading[key] = _bool(raw[key], f"{where}.{key}")
    if raw.get("lost") is not None:
        reading["lost"] = _bool(raw["lost"], f"{where}.lost")
    procs = _list(raw.get("procs"), f"{where}.procs", MAX_PROCS)
    for position, proc in enumerate(procs):
        proc = _dict(proc, f"{where}.procs[{position}]")
        _int(proc.get("pid"), f"{where}.procs[{position}].pid")
        _number(proc.get("mem_mib"), f"{where}.procs[{position}].mem_mib")
        if proc.get("job") is not None:
            _int(proc["job"], f"{where}.procs[{position}].job")
    return index, reading


def _event(raw: Any, where: str) -> dict[str, Any]:
    raw = _dict(raw, where)
    kind = raw.get("kind")
    if kind not in EVENT_KINDS:
        raise ProtocolError(f"must be one of {', '.join(EVENT_KINDS)}", field=f"{where}.kind")
    gpu = raw.get("gpu")
    code = raw.get("code")
    return {
        "kind": kind,
        "gpu": None if gpu is None else _int(gpu, f"{where}.gpu", high=MAX_GPUS - 1),
        "code": None if code is None else _int(code, f"{where}.code", high=2**31),
        "ts": _number(raw.get("ts"), f"{where}.ts"),
        "detail": _text(raw.get("detail"), f"{where}.detail", max_length=300),
    }


def batch_validate(message: dict[str, Any], *, now: float | None = None) -> Batch:
    """The checked batch, or ProtocolError."""
    now = time.time() if now is None else now
    seq = _int(message.get("seq"), "seq")
    ts = _number(message.get("ts"), "ts")
    if ts is None:
        raise ProtocolError("is required", field="ts")
    if not now - MAX_BATCH_AGE <= ts <= now + MAX_BATCH_AHEAD:
        raise ProtocolError("is too far from the console's clock", field="ts")
    replay = _bool(message.get("replay"), "replay") or False
    gpus: dict[int, dict[str, Any]] = {}
    for position, raw in enumerate(_list(message.get("gpus"), "gpus", MAX_GPUS)):
        index, reading = _reading(raw, f"gpus[{position}]")
        if index in gpus:
            raise ProtocolError("repeats a GPU index", field=f"gpus[{position}].i")
        gpus[index] = reading
    raw_host = _dict(message.get("host"), "host")
    host = {k: _number(raw_host[k], f"host.{k}") for k in HOST_READING_KEYS if k in raw_host}
    events = tuple(
        _event(raw, f"events[{position}]")
        for position, raw in enumerate(_list(message.get("events"), "events", MAX_EVENTS))
    )
    return Batch(seq=seq, ts=float(ts), replay=replay, gpus=gpus, host=host, events=events)


def time_validate(message: dict[str, Any]) -> tuple[float, float]:
    """``(t0, t1)`` of a time answer."""
    t0 = _number(message.get("t0"), "t0")
    t1 = _number(message.get("t1"), "t1")
    if t0 is None or t1 is None:
        raise ProtocolError("t0 and t1 are required", field="t0" if t0 is None else "t1")
    return float(t0), float(t1)
