"""``/metrics``: the latest GPU and node gauges in Prometheus text format.

Names follow dcgm-exporter (``DCGM_FI_DEV_*``) so existing dashboards work; Podium's own
(health, XIDs, heartbeats) are ``podium_*``. GPU series carry ``node``, ``gpu``, ``uuid``,
``modelName`` and ``simulated`` labels. Readings come from the nodes' live summaries and
are left out when missing or older than NODE_LOST_AFTER (missing is not zero). With
PODIUM_METRICS_TOKEN set, scrapers send ``Authorization: Bearer <token>``.
"""

import hmac
import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db.models import Sum
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from apps.monitoring.broadcast import LATEST_KEY, SEEN_KEY
from apps.monitoring.ingest.live import HEALTH_CODES
from apps.monitoring.models import Gpu, Health, HealthEvent, Node
from apps.system.heartbeats import redis_client

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# name → (type, help)
METRICS: dict[str, tuple[str, str]] = {
    "DCGM_FI_DEV_GPU_UTIL": ("gauge", "GPU utilization (in %)."),
    "DCGM_FI_DEV_FB_USED": ("gauge", "Framebuffer memory used (in MiB)."),
    "DCGM_FI_DEV_FB_FREE": ("gauge", "Framebuffer memory free (in MiB)."),
    "DCGM_FI_DEV_GPU_TEMP": ("gauge", "GPU temperature (in C)."),
    "DCGM_FI_DEV_POWER_USAGE": ("gauge", "Power draw (in W)."),
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": ("counter", "Volatile single-bit ECC errors."),
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": ("counter", "Volatile double-bit ECC errors."),
    "podium_gpu_xid_events_total": ("counter", "XID errors reported for the GPU."),
    "podium_gpu_health": ("gauge", "GPU health: 0 healthy, 1 degraded, 2 unhealthy."),
    "podium_node_xid_events_total": ("counter", "XID errors that take the whole node out."),
    "podium_node_health": ("gauge", "Node health: 0 healthy, 1 degraded, 2 unhealthy."),
    "podium_node_up": ("gauge", "1 while the node is ready, 0 when pending, suspect or lost."),
    "podium_node_heartbeat_age_seconds": ("gauge", "Seconds since the node was last heard."),
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float | int | bool) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


class Exposition:
    """Samples grouped by metric, rendered with HELP and TYPE lines."""

    def __init__(self) -> None:
        self.samples: dict[str, list[str]] = {name: [] for name in METRICS}

    def add(self, name: str, labels: dict[str, str], value: float | int | None) -> None:
        if value is not None:
            self.samples[name].append(f"{name}{_labels(labels)} {_number(value)}")

    def render(self) -> str:
        lines = []
        for name, (kind, text) in METRICS.items():
            if not self.samples[name]:
                continue
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", *self.samples[name]]
        return "\n".join(lines) + "\n"


def _live() -> tuple[dict[int, dict[str, Any]], dict[int, float]]:
    try:
        pipe = redis_client().pipeline()
        pipe.hgetall(LATEST_KEY)
        pipe.hgetall(SEEN_KEY)
        latest, seen = pipe.execute()
    except Exception:
        logger.warning("Redis unreachable: /metrics without live readings")
        return {}, {}
    return (
        {int(k): json.loads(v) for k, v in latest.items()},
        {int(k): float(v) for k, v in seen.items()},
    )


def _at(rows: Any, index: int, width: int) -> list[Any]:
    """Entry ``index`` of a per-GPU list of the summary, padded with None to ``width``."""
    entry = rows[index] if isinstance(rows, list) and index < len(rows) and rows[index] else []
    return [*entry, *[None] * width][:width]


def _gpu_readings(out: Exposition, labels: dict[str, str], summary: dict[str, Any], i: int) -> None:
    util, _, temp, power, _ = _at(summary.get("gpus"), i, 5)
    used, total = _at(summary.get("fb"), i, 2)
    sbe, dbe = _at(summary.get("ecc"), i, 2)
    out.add("DCGM_FI_DEV_GPU_UTIL", labels, util)
    out.add("DCGM_FI_DEV_FB_USED", labels, used)
    out.add("DCGM_FI_DEV_FB_FREE", labels, total - used if used is not None and total else None)
    out.add("DCGM_FI_DEV_GPU_TEMP", labels, temp)
    out.add("DCGM_FI_DEV_POWER_USAGE", labels, power)
    out.add("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", labels, sbe)
    out.add("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", labels, dbe)


def metrics_render(*, now: float | None = None) -> str:
    """The exposition text for every live node and its GPUs."""
    now = time.time() if now is None else now
    fresh_for = settings.PODIUM["NODE_LOST_AFTER"]
    nodes = {n.pk: n for n in Node.objects.filter(revoked_at__isnull=True)}
    gpus: Iterable[Gpu] = Gpu.objects.filter(node__revoked_at__isnull=True).order_by(
        "node_id", "index"
    )
    xids = {
        (row["node_id"], row["gpu_index"]): row["n"]
        for row in HealthEvent.objects.filter(source="xid", node__revoked_at__isnull=True)
        .values("node_id", "gpu_index")
        .annotate(n=Sum("count"))
        .order_by()
    }
    latest, seen = _live()
    out = Exposition()
    for node in sorted(nodes.values(), key=lambda n: n.name):
        labels = {"node": node.name, "simulated": str(node.simulated).lower()}
        heard = seen.get(node.pk) or (node.last_seen_at.timestamp() if node.last_seen_at else None)
        out.add("podium_node_up", labels, node.state == Node.State.READY)
        out.add("podium_node_health", labels, HEALTH_CODES[Health(node.health)])
        out.add(
            "podium_node_heartbeat_age_seconds",
            labels,
            round(max(0.0, now - heard), 3) if heard else None,
        )
        out.add("podium_node_xid_events_total", labels, xids.get((node.pk, None)))
    for gpu in gpus:
        node = nodes[gpu.node_id]
        labels = {
            "node": node.name,
            "gpu": str(gpu.index),
            "uuid": gpu.uuid,
            "modelName": gpu.name,
            "simulated": str(gpu.simulated or node.simulated).lower(),
        }
        out.add("podium_gpu_health", labels, HEALTH_CODES[Health(gpu.health)])
        out.add("podium_gpu_xid_events_total", labels, xids.get((node.pk, gpu.index), 0))
        summary = latest.get(node.pk)
        if gpu.present and summary and now - float(summary.get("ts") or 0) <= fresh_for:
            _gpu_readings(out, labels, summary, gpu.index)
    return out.render()


def _authorized(request: HttpRequest, token: str) -> bool:
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode(), token.encode()
    )


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus scrape endpoint; a Bearer token is required when PODIUM_METRICS_TOKEN is set."""
    token = settings.PODIUM_METRICS_TOKEN
    if token and not _authorized(request, token):
        response = HttpResponse("A valid metrics token is required.\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(metrics_render(), content_type=CONTENT_TYPE)
