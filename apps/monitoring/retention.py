"""Rollups of raw GPU samples (1 minute, 1 hour) and retention of everything telemetry.

Buckets are ``floor(ts / size) * size`` computed by the database (SQLite and PostgreSQL
alike). Each run recomputes a trailing window, so samples that arrive late (an agent
replaying after an outage) are folded in; rows are upserted, so runs are idempotent.
"""

import time
from typing import Any

from django.conf import settings
from django.db.models import Avg, Case, Count, F, FloatField, Max, Min, Sum, When
from django.db.models.functions import Cast, Floor

from apps.monitoring.broadcast import LATEST_KEY, SEEN_KEY
from apps.monitoring.models import GpuRollup, GpuSample, HostSample, Node
from apps.system.heartbeats import redis_client

# Minutes recomputed on every run, so late samples are included.
MINUTE_WINDOW = 10 * 60
# Hours recomputed on every run (the current one included, so long charts reach now).
HOUR_WINDOW = 2 * 3600
DELETE_BATCH = 5000
# (rollup prefix, raw sample field)
MEASURES = (
    ("util", "util"),
    ("mem_used", "mem_used_mib"),
    ("temp", "temp_c"),
    ("power", "power_w"),
)
STAT_FIELDS = [f"{name}_{stat}" for name, _ in MEASURES for stat in ("min", "avg", "max")]


def _bucket(size: int) -> Any:
    return Cast(Floor(F("ts") / size) * size, FloatField())


def _upsert(rows: list[GpuRollup]) -> int:
    GpuRollup.objects.bulk_create(
        rows,
        batch_size=500,
        update_conflicts=True,
        unique_fields=["node", "gpu_index", "resolution", "bucket"],
        update_fields=["samples", *STAT_FIELDS],
    )
    return len(rows)


def rollup_minutes(*, now: float | None = None) -> int:
    """Min/avg/max per GPU and closed minute over the trailing window; returns rows written."""
    now = time.time() if now is None else now
    end = (now // GpuRollup.MINUTE) * GpuRollup.MINUTE
    start = end - MINUTE_WINDOW
    stats: dict[str, Any] = {"n": Count("id")}
    for name, source in MEASURES:
        stats[f"{name}_min"] = Min(source)
        stats[f"{name}_avg"] = Avg(source)
        stats[f"{name}_max"] = Max(source)
    groups: Any = (
        GpuSample.objects.filter(ts__gte=start, ts__lt=end)
        .annotate(b=_bucket(GpuRollup.MINUTE))
        .values("node_id", "gpu_index", "b")
        .annotate(**stats)
        .order_by()
    )
    rows = [
        GpuRollup(
            node_id=g["node_id"],
            gpu_index=g["gpu_index"],
            resolution=GpuRollup.MINUTE,
            bucket=float(g["b"]),
            samples=g["n"],
            **{f: g[f] for f in STAT_FIELDS},
        )
        for g in groups
    ]
    return _upsert(rows)


def rollup_hours(*, now: float | None = None) -> int:
    """Hour buckets from minute rollups over the trailing window (averages weighted by
    samples); returns rows written."""
    now = time.time() if now is None else now
    start = (now // GpuRollup.HOUR) * GpuRollup.HOUR - HOUR_WINDOW
    stats: dict[str, Any] = {"n": Sum("samples")}
    for name, _ in MEASURES:
        avg = F(f"{name}_avg")
        stats[f"{name}_min"] = Min(f"{name}_min")
        stats[f"{name}_max"] = Max(f"{name}_max")
        stats[f"{name}_wsum"] = Sum(avg * F("samples"), output_field=FloatField())
        stats[f"{name}_weight"] = Sum(
            Case(When(**{f"{name}_avg__isnull": False}, then=F("samples")), default=0)
        )
    groups: Any = (
        GpuRollup.objects.filter(resolution=GpuRollup.MINUTE, bucket__gte=start)
        .annotate(b=Cast(Floor(F("bucket") / GpuRollup.HOUR) * GpuRollup.HOUR, FloatField()))
        .values("node_id", "gpu_index", "b")
        .annotate(**stats)
        .order_by()
    )
    rows = []
    for g in groups:
        values = {}
        for name, _ in MEASURES:
            weight = g[f"{name}_weight"]
            values[f"{name}_min"] = g[f"{name}_min"]
            values[f"{name}_max"] = g[f"{name}_max"]
            values[f"{name}_avg"] = g[f"{name}_wsum"] / weight if weight else None
        rows.append(
            GpuRollup(
                node_id=g["node_id"],
                gpu_index=g["gpu_index"],
                resolution=GpuRollup.HOUR,
                bucket=float(g["b"]),
                samples=g["n"] or 0,
                **values,
            )
        )
    return _upsert(rows)


def _delete_in_batches(queryset: Any) -> int:
    deleted = 0
    while True:
        ids = list(queryset.values_list("pk", flat=True)[:DELETE_BATCH])
        if not ids:
            return deleted
        count, _ = queryset.model.objects.filter(pk__in=ids).delete()
        deleted += count


def telemetry_prune(*, now: float | None = None) -> dict[str, int]:
    """Delete raw samples and rollups past their retention; returns how many of each went."""
    now = time.time() if now is None else now
    podium = settings.PODIUM
    raw_cutoff = now - podium["RAW_RETENTION_HOURS"] * 3600
    return {
        "gpu_samples": _delete_in_batches(GpuSample.objects.filter(ts__lt=raw_cutoff)),
        "host_samples": _delete_in_batches(HostSample.objects.filter(ts__lt=raw_cutoff)),
        "minute_rollups": _delete_in_batches(
            GpuRollup.objects.filter(
                resolution=GpuRollup.MINUTE,
                bucket__lt=now - podium["MINUTE_RETENTION_DAYS"] * 86400,
            )
        ),
        "hour_rollups": _delete_in_batches(
            GpuRollup.objects.filter(
                resolution=GpuRollup.HOUR, bucket__lt=now - podium["HOUR_RETENTION_DAYS"] * 86400
            )
        ),
    }


def live_prune() -> int:
    """Forget the live summaries and last-heard times of nodes revoked or deleted."""
    client = redis_client()
    known = {int(k) for k in client.hkeys(LATEST_KEY)} | {int(k) for k in client.hkeys(SEEN_KEY)}
    if not known:
        return 0
    live = set(
        Node.objects.filter(pk__in=known, revoked_at__isnull=True).values_list("pk", flat=True)
    )
    gone = sorted(known - live)
    if gone:
        pipe = client.pipeline()
        pipe.hdel(LATEST_KEY, *gone)
        pipe.hdel(SEEN_KEY, *gone)
        pipe.execute()
    return len(gone)
