"""What training does with the output of job processes (``job_output`` from the agents,
registered in ``settings.AGENT_MESSAGE_HANDLERS``).

Every line is stored with its rank, attempt and line number (one bulk insert per
message; a message sent twice stores its lines once) and shown to the job's watchers.
Lines the SDK printed (``@podium {...}``) are not output but records: a ``report`` is a
metrics point, a ``checkpoint`` a finished checkpoint, which also tells the scheduler
when the job last saved its work and prunes the job's older checkpoints.
"""

import logging
import math
from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.scheduler import services as scheduler
from apps.training.checkpoints import checkpoint_announced
from apps.training.models import LogLine, MetricPoint
from apps.training.tasks import checkpoints_prune_soon
from podium.agent import protocol
from podium.sdk import marker_parse

logger = logging.getLogger(__name__)

Message = dict[str, Any]
MAX_METRICS = 64  # values per report kept
MAX_METRIC_NAME = 64


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _at(record: dict[str, Any], now: datetime) -> datetime:
    ts = record.get("ts")
    if isinstance(ts, int | float) and not isinstance(ts, bool) and math.isfinite(ts):
        at = datetime.fromtimestamp(ts, tz=UTC)
        # A node's clock far off the console's would scatter points; keep them near now.
        if abs((at - now).total_seconds()) < 300:
            return at
    return now


def _metric_ok(name: Any, value: Any) -> bool:
    return (
        isinstance(name, str)
        and 0 < len(name) <= MAX_METRIC_NAME
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def metric_values(raw: Any) -> dict[str, float]:
    """The finite numeric values of a report, by name (others are dropped)."""
    if not isinstance(raw, dict):
        return {}
    return {
        name: value for name, value in list(raw.items())[:MAX_METRICS] if _metric_ok(name, value)
    }


def _records(
    source: scheduler.OutputSource, records: list[tuple[int, dict[str, Any]]], now: datetime
) -> tuple[list[dict[str, Any]], bool]:
    """Store the SDK's records (with their line numbers); return the metric points to
    show and whether a checkpoint was announced."""
    points: list[MetricPoint] = []
    checkpointed = False
    for seq, record in records:
        kind, step = record.get("kind"), _int(record.get("step"))
        if step is None or step < 0:
            continue
        at = _at(record, now)
        if kind == "report":
            values = metric_values(record.get("metrics"))
            if values:
                points.append(
                    MetricPoint(
                        job_id=source.job_id,
                        allocation_id=source.alloc_id,
                        seq=seq,
                        attempt=source.attempt,
                        rank=source.rank,
                        step=step,
                        at=at,
                        values=values,
                    )
                )
        elif kind == "checkpoint" and isinstance(record.get("path"), str):
            checkpoint_announced(
                job_id=source.job_id,
                attempt=source.attempt,
                step=step,
                path=record["path"],
                size_bytes=max(0, _int(record.get("size_bytes")) or 0),
                file_count=max(0, _int(record.get("file_count")) or 0),
                at=at,
            )
            scheduler.job_checkpoint_mark(job_id=source.job_id, at=at)
            checkpointed = True
    MetricPoint.objects.bulk_create(points, ignore_conflicts=True)
    shown = [
        {"attempt": p.attempt, "step": p.step, "at": p.at.isoformat(), "values": p.values}
        for p in points
    ]
    return shown, checkpointed


def on_job_output(node_id: int, message: Message) -> list[Message]:
    """Store a rank's output lines and the SDK's records among them; show them live."""
    alloc_id = _int(message.get("alloc"))
    lines = message.get("lines")
    first = _int(message.get("seq"))
    if alloc_id is None or not isinstance(lines, list) or first is None or first < 0:
        return []
    source = scheduler.output_source(node_id=node_id, alloc_id=alloc_id)
    if source is None:
        return []
    now = timezone.now()
    scheduler.job_output_mark(source, now=now)
    output: list[LogLine] = []
    records: list[tuple[int, dict[str, Any]]] = []
    for offset, raw in enumerate(lines):
        line = str(raw)[: protocol.OUTPUT_LINE_MAX_CHARS]
        record = marker_parse(line)
        if record is not None:
            records.append((first + offset, record))
            continue
        output.append(
            LogLine(
                job_id=source.job_id,
                allocation_id=source.alloc_id,
                attempt=source.attempt,
                rank=source.rank,
                seq=first + offset,
                at=now,
                line=line,
            )
        )
    points: list[dict[str, Any]] = []
    checkpointed = False
    if not records:
        LogLine.objects.bulk_create(output, ignore_conflicts=True)
    else:
        with transaction.atomic():
            LogLine.objects.bulk_create(output, ignore_conflicts=True)
            points, checkpointed = _records(source, records, now)
            if checkpointed:
                transaction.on_commit(lambda: checkpoints_prune_soon(source.job_id))
    if output:
        scheduler.job_output_show(source, seq=output[0].seq, lines=[row.line for row in output])
    if points:
        scheduler.job_metrics_show(source.job_id, points)
    if checkpointed:
        scheduler.job_changed_show(source.job_id)
    return []
