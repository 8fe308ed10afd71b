"""A GPU's readings over time, from raw samples or the rollup that fits the range."""

import time
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from apps.accounts.selectors import User
from apps.monitoring.models import (
    GpuRollup,
    GpuSample,
    HostSample,
    Node,
)
from apps.monitoring.selectors.nodes import gpu_get
from apps.system.errors import ApplicationError

# History ranges: seconds covered and the table each one reads by default.
RAW = 0  # resolution of raw samples; rollups have theirs in seconds
HISTORY_RANGES: dict[str, tuple[int, int]] = {
    "15m": (15 * 60, RAW),
    "1h": (3600, RAW),
    "24h": (24 * 3600, GpuRollup.MINUTE),
    "7d": (7 * 24 * 3600, GpuRollup.HOUR),
}


@dataclass(frozen=True)
class History:
    """Points of one GPU over a range: raw samples or min/avg/max rollups."""

    range: str
    resolution: int  # seconds per point of a rollup; RAW for raw samples
    since: float
    until: float
    points: list[dict[str, Any]]

    @property
    def is_rollup(self) -> bool:
        return self.resolution != RAW


RAW_FIELDS = ("ts", "util", "mem_used_mib", "mem_total_mib", "temp_c", "power_w")
ROLLUP_FIELDS = (
    "samples",
    "util_min",
    "util_avg",
    "util_max",
    "mem_used_min",
    "mem_used_avg",
    "mem_used_max",
    "temp_min",
    "temp_avg",
    "temp_max",
    "power_min",
    "power_avg",
    "power_max",
)


def _raw_points(node: Node, index: int, since: float, until: float) -> QuerySet:
    return (
        GpuSample.objects.filter(node=node, gpu_index=index, ts__gte=since, ts__lte=until)
        .order_by("ts")
        .values(*RAW_FIELDS)
    )


def _rollup_points(node: Node, index: int, resolution: int, since: float, until: float) -> QuerySet:
    return (
        GpuRollup.objects.filter(
            node=node,
            gpu_index=index,
            resolution=resolution,
            bucket__gte=since - resolution,
            bucket__lte=until,
        )
        .order_by("bucket")
        .values("bucket", *ROLLUP_FIELDS)
    )


def gpu_history(
    *, user: User, node_id: int, index: int, range: str, now: float | None = None
) -> History:
    """One GPU's readings over ``range`` ("15m", "1h", "24h", "7d") from the right table.

    15 minutes and one hour read raw samples (one hour falls back to minute rollups when
    raw samples are thinner, e.g. after retention pruned them); 24 hours read minute
    rollups and 7 days hour rollups.
    """
    if range not in HISTORY_RANGES:
        choices = ", ".join(HISTORY_RANGES)
        raise ApplicationError(f"Range must be one of: {choices}.", field="range")
    gpu = gpu_get(user=user, node_id=node_id, index=index)
    seconds, resolution = HISTORY_RANGES[range]
    until = now if now is not None else time.time()
    since = until - seconds
    if resolution == RAW:
        raw = list(_raw_points(gpu.node, index, since, until))
        if range == "1h":
            minutes = _rollup_points(gpu.node, index, GpuRollup.MINUTE, since, until)
            if len(raw) < minutes.count():
                return _rollup_history(range, GpuRollup.MINUTE, since, until, list(minutes))
        return History(range=range, resolution=RAW, since=since, until=until, points=raw)
    points = list(_rollup_points(gpu.node, index, resolution, since, until))
    return _rollup_history(range, resolution, since, until, points)


def _rollup_history(
    range: str, resolution: int, since: float, until: float, points: list[dict[str, Any]]
) -> History:
    for point in points:
        point["ts"] = point.pop("bucket")
    return History(range=range, resolution=resolution, since=since, until=until, points=points)


def host_sample_latest(*, node: Node) -> HostSample | None:
    """The newest stored host sample of an authorised node."""
    return HostSample.objects.filter(node=node).order_by("-ts").first()


def node_recent(
    *, node: Node, seconds: float, now: float | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Raw GPU and host samples of an authorised node over the last ``seconds``, oldest first."""
    since = (now if now is not None else time.time()) - seconds
    gpu = GpuSample.objects.filter(node=node, ts__gte=since).order_by("ts", "gpu_index")
    host = HostSample.objects.filter(node=node, ts__gte=since).order_by("ts")
    host_fields = ("ts", "cpu_percent", "mem_used_bytes", "mem_total_bytes")
    return (
        [dict(row) for row in gpu.values("gpu_index", *RAW_FIELDS)],
        [dict(row) for row in host.values(*host_fields)],
    )
