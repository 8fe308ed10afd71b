"""A node's live state: its summary in Redis, pushes to browsers, raw sample rows.

The live summary (``LATEST_KEY``, one JSON per node) is what the fleet overview shows:

    {"id", "name", "ws", "state", "health", "simulated", "ts", "seq",
     "gpus": [[util, mem_used_pct, temp_c, power_w, health_code], ...],   # per GPU index
     "host": {"cpu", "mem_pct"}, "power_w",
     "fb": [[mem_used_mib, mem_total_mib], ...], "ecc": [[sbe, dbe], ...]}

``fb`` and ``ecc`` feed ``/metrics`` only; fleet frames leave them out (``fleet.py``).
"""

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import async_to_sync
from django.db import transaction

from apps.monitoring.broadcast import (
    DIRTY_KEY,
    LATEST_KEY,
    agent_group,
    event_payload,
    group_send,
    node_group,
)
from apps.monitoring.ingest.schema import Batch
from apps.monitoring.models import Gpu, GpuSample, Health, HealthEvent, HostSample, Node
from apps.system.heartbeats import redis_client

logger = logging.getLogger(__name__)

HEALTH_CODES = {Health.HEALTHY: 0, Health.DEGRADED: 1, Health.UNHEALTHY: 2}
# Summary keys only /metrics reads; fleet frames drop them.
METRICS_ONLY_KEYS = ("fb", "ecc")
GPU_SAMPLE_FIELDS = (
    "util",
    "mem_util",
    "mem_used_mib",
    "mem_total_mib",
    "temp_c",
    "power_w",
    "power_limit_w",
    "sm_clock_mhz",
)
GPU_SAMPLE_COUNTERS = ("throttle", "ecc_sbe", "ecc_dbe")
HOST_SAMPLE_FIELDS = ("cpu_percent", "load1", "net_rx_bps", "net_tx_bps")
HOST_SAMPLE_COUNTERS = ("mem_used_bytes", "mem_total_bytes", "disk_used_bytes", "disk_total_bytes")


@dataclass
class NodeView:
    """What an agent connection keeps about its node between database visits."""

    id: int
    name: str
    workspace_id: int | None
    state: str
    health: str
    simulated: bool
    expected_gpus: int
    gpu_health: dict[int, str] = field(default_factory=dict)
    gpu_memory_mib: dict[int, int | None] = field(default_factory=dict)
    # Open condition events: (gpu index, source, code) → rule class.
    open_conditions: dict[tuple[int | None, str, str], str] = field(default_factory=dict)
    clock_skew_ms: float | None = None


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(float(value), digits)


def _pct(part: float | None, whole: float | None) -> float | None:
    if part is None or not whole:
        return None
    return round(100.0 * part / whole, 1)


def summary_build(view: NodeView, batch: Batch) -> dict[str, Any]:
    """The live summary of ``view``'s node after ``batch``."""
    indexes = set(view.gpu_health) | set(batch.gpus)
    size = max(indexes) + 1 if indexes else 0
    gpus: list[list[Any]] = []
    fb: list[list[Any]] = []
    ecc: list[list[Any]] = []
    power_total = None
    for index in range(size):
        reading = batch.gpus.get(index, {})
        total = reading.get("mem_total_mib") or view.gpu_memory_mib.get(index)
        used = reading.get("mem_used_mib")
        power = reading.get("power_w")
        if power is not None:
            power_total = (power_total or 0.0) + power
        health = view.gpu_health.get(index, Health.HEALTHY)
        if reading.get("lost"):
            health = Health.UNHEALTHY
        gpus.append(
            [
                _round(reading.get("util")),
                _pct(used, total),
                _round(reading.get("temp_c")),
                _round(power),
                HEALTH_CODES.get(Health(health), 0),
            ]
        )
        fb.append([_round(used), _round(total)])
        ecc.append([reading.get("ecc_sbe"), reading.get("ecc_dbe")])
    host = batch.host
    return {
        "id": view.id,
        "name": view.name,
        "ws": view.workspace_id,
        "state": view.state,
        "health": view.health,
        "simulated": view.simulated,
        "ts": batch.ts,
        "seq": batch.seq,
        "gpus": gpus,
        "host": {
            "cpu": _round(host.get("cpu_percent")),
            "mem_pct": _pct(host.get("mem_used_bytes"), host.get("mem_total_bytes")),
        },
        "power_w": _round(power_total),
        "fb": fb,
        "ecc": ecc,
    }


def summary_blank(node: Node, gpus: Iterable[Gpu]) -> dict[str, Any]:
    """A summary without readings, for a node not heard from since the console started."""
    by_index = {g.index: g for g in gpus}
    size = max(by_index) + 1 if by_index else 0
    return {
        "id": node.pk,
        "name": node.name,
        "ws": node.workspace_id,
        "state": node.state,
        "health": node.health,
        "simulated": node.simulated,
        "ts": node.last_seen_at.timestamp() if node.last_seen_at else None,
        "seq": None,
        "gpus": [
            [None, None, None, None, HEALTH_CODES[Health(by_index[i].health)]]
            if i in by_index
            else [None, None, None, None, None]
            for i in range(size)
        ],
        "host": {"cpu": None, "mem_pct": None},
        "power_w": None,
        "fb": [
            [None, by_index[i].memory_total_mib if i in by_index else None] for i in range(size)
        ],
        "ecc": [[None, None] for _ in range(size)],
    }


def batch_rows(node_id: int, batch: Batch) -> list[GpuSample | HostSample]:
    """The raw sample rows of a batch; a GPU without any stored reading has none."""
    rows: list[GpuSample | HostSample] = []
    for index, reading in batch.gpus.items():
        values = {k: reading.get(k) for k in GPU_SAMPLE_FIELDS}
        values.update(
            {k: None if reading.get(k) is None else int(reading[k]) for k in GPU_SAMPLE_COUNTERS}
        )
        if any(v is not None for v in values.values()):
            rows.append(GpuSample(node_id=node_id, gpu_index=index, ts=batch.ts, **values))
    if batch.host:
        values = {k: batch.host.get(k) for k in HOST_SAMPLE_FIELDS}
        values.update(
            {
                k: None if batch.host.get(k) is None else int(batch.host[k])
                for k in HOST_SAMPLE_COUNTERS
            }
        )
        rows.append(HostSample(node_id=node_id, ts=batch.ts, **values))
    return rows


def samples_store(rows: list[GpuSample | HostSample]) -> int:
    """Insert raw samples; rows already stored (a replayed batch) are skipped."""
    gpu_rows = [r for r in rows if isinstance(r, GpuSample)]
    host_rows = [r for r in rows if isinstance(r, HostSample)]
    with transaction.atomic():
        GpuSample.objects.bulk_create(gpu_rows, ignore_conflicts=True, batch_size=500)
        HostSample.objects.bulk_create(host_rows, ignore_conflicts=True, batch_size=500)
    return len(rows)


def push(group: str, message: dict[str, Any]) -> None:
    """Send to a channel group from synchronous code; a broken layer is logged, not raised."""
    try:
        async_to_sync(group_send)(group, message)
    except Exception:
        logger.warning("could not push %s to %s", message.get("type"), group, exc_info=True)


def node_events_push(node_id: int, events: Iterable[HealthEvent]) -> None:
    """Push events of a node to its watchers (``node.event``)."""
    for event in events:
        push(node_group(node_id), {"type": "node.event", "event": event_payload(event)})


def node_live_update(node_id: int) -> None:
    """After the node's row, its GPUs or its events changed: bring everything live up to date.

    Patches the node's live summary (state, health, GPU health) and marks it for the next
    fleet frame, pushes ``node.state`` to its watchers and tells its agent connection
    (``agent.health``) so the summaries it writes agree. Call it after commit.
    """
    node = Node.objects.filter(pk=node_id).first()
    if node is None:
        return
    gpus = list(Gpu.objects.filter(node_id=node_id))
    gpu_health = {g.index: g.health for g in gpus}
    try:
        client = redis_client()
        raw = client.hget(LATEST_KEY, node_id)
        summary = json.loads(raw) if raw else summary_blank(node, gpus)
        summary.update(state=node.state, health=node.health, name=node.name, ws=node.workspace_id)
        for index, entry in enumerate(summary.get("gpus", [])):
            if index in gpu_health:
                entry[4] = HEALTH_CODES[Health(gpu_health[index])]
        pipe = client.pipeline()
        pipe.hset(LATEST_KEY, node_id, json.dumps(summary, separators=(",", ":")))
        pipe.sadd(DIRTY_KEY, node_id)
        pipe.execute()
    except Exception:
        logger.warning("Redis unreachable: live summary of node %s not updated", node_id)
    # Index keys as strings: JSON's and the channel layer's (msgpack) maps want them so.
    health_by_key = {str(index): health for index, health in gpu_health.items()}
    state = {"state": node.state, "health": node.health, "gpus": health_by_key}
    push(node_group(node_id), {"type": "node.state", **state})
    push(agent_group(node_id), {"type": "agent.health", **state})


def node_live_update_on_commit(node_id: int) -> None:
    """``node_live_update`` once the current transaction commits."""
    transaction.on_commit(lambda: node_live_update(node_id))
