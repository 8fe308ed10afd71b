"""/metrics: Prometheus text with DCGM-like names and labels, token protection."""

import json
import re
import time
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apps.monitoring.broadcast import LATEST_KEY, SEEN_KEY
from apps.monitoring.models import Gpu, HealthEvent, Node
from apps.system.heartbeats import redis_client
from tests.monitoring.factories import node_create

pytestmark = pytest.mark.django_db

SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)\{(.*)\} (\S+)$")


def scrape(client: Client | None = None, **headers: str) -> str:
    response = (client or Client()).get("/metrics", headers=headers)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return response.content.decode()


def samples(text: str) -> dict[tuple[str, str], float]:
    """(name, labels) → value for every sample line."""
    found = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, line
        found[(match[1], match[2])] = float(match[3])
    return found


def gpu_labels(node: Node, index: int) -> str:
    gpu = Gpu.objects.get(node=node, index=index)
    return (
        f'node="{node.name}",gpu="{index}",uuid="{gpu.uuid}",modelName="{gpu.name}",'
        'simulated="true"'
    )


def live(node: Node, **changes: Any) -> None:
    summary = {
        "id": node.pk, "name": node.name, "ws": None, "state": "ready", "health": "healthy",
        "simulated": True, "ts": time.time(), "seq": 3,
        "gpus": [[87.5, 50.0, 61.0, 412.3, 0], [None, None, None, None, 2]],
        "host": {"cpu": 10.0, "mem_pct": 20.0}, "power_w": 412.3,
        "fb": [[40779.5, 81559], [None, 81559]], "ecc": [[4, 1], [None, None]],
        **changes,
    }  # fmt: skip
    client = redis_client()
    client.hset(LATEST_KEY, node.pk, json.dumps(summary))
    client.hset(SEEN_KEY, node.pk, time.time() - 1.5)


def test_health_and_heartbeat_come_from_the_database_even_without_redis() -> None:
    node = node_create("gpu-node-1", gpus=2)
    Gpu.objects.filter(node=node, index=1).update(health="unhealthy")
    Node.objects.filter(pk=node.pk).update(health="degraded")
    now = timezone.now()
    HealthEvent.objects.create(
        node=node, gpu_index=1, source="xid", code="48", rule_class="gpu_reset",
        severity="critical", reason="x", count=3, first_at=now, last_at=now,
    )  # fmt: skip

    text = scrape()

    found = samples(text)
    assert found[("podium_gpu_health", gpu_labels(node, 1))] == 2
    assert found[("podium_gpu_health", gpu_labels(node, 0))] == 0
    assert found[("podium_gpu_xid_events_total", gpu_labels(node, 1))] == 3
    assert found[("podium_node_health", 'node="gpu-node-1",simulated="true"')] == 1
    assert found[("podium_node_up", 'node="gpu-node-1",simulated="true"')] == 1
    assert ("podium_node_heartbeat_age_seconds", 'node="gpu-node-1",simulated="true"') in found
    assert "# TYPE podium_gpu_health gauge" in text
    assert "# HELP podium_gpu_xid_events_total " in text
    assert "DCGM_FI_DEV_GPU_UTIL" not in text  # no live readings: nothing made up


@pytest.mark.integration
def test_live_readings_use_dcgm_names_and_missing_ones_are_left_out() -> None:
    node = node_create("gpu-node-1", gpus=2)
    live(node)

    found = samples(scrape())

    first = gpu_labels(node, 0)
    assert found[("DCGM_FI_DEV_GPU_UTIL", first)] == 87.5
    assert found[("DCGM_FI_DEV_FB_USED", first)] == 40779.5
    assert found[("DCGM_FI_DEV_FB_FREE", first)] == 81559 - 40779.5
    assert found[("DCGM_FI_DEV_GPU_TEMP", first)] == 61
    assert found[("DCGM_FI_DEV_POWER_USAGE", first)] == 412.3
    assert found[("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", first)] == 4
    assert found[("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", first)] == 1
    assert found[("podium_node_heartbeat_age_seconds", 'node="gpu-node-1",simulated="true"')] == (
        pytest.approx(1.5, abs=1)
    )
    assert ("DCGM_FI_DEV_GPU_UTIL", gpu_labels(node, 1)) not in found


@pytest.mark.integration
def test_stale_readings_and_revoked_nodes_are_not_exported() -> None:
    stale = node_create("stale", gpus=1)
    live(stale, ts=time.time() - 3600)
    gone = node_create("gone", gpus=1)
    Node.objects.filter(pk=gone.pk).update(revoked_at=timezone.now())
    live(gone)

    text = scrape()

    assert "DCGM_FI_DEV_GPU_UTIL" not in text
    assert 'node="gone"' not in text
    assert 'node="stale"' in text


def test_label_values_are_escaped() -> None:
    node = node_create("gpu-node-1", gpus=1)
    Gpu.objects.filter(node=node).update(name='H100 "SXM"\\x\nrev')

    text = scrape()

    assert 'modelName="H100 \\"SXM\\"\\\\x\\nrev"' in text


def test_a_configured_token_is_required(settings: Any) -> None:
    settings.PODIUM_METRICS_TOKEN = "scrape-me"
    node_create()
    client = Client()

    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Basic scrape-me"}).status_code == 401
    assert "podium_node_up" in scrape(client, Authorization="Bearer scrape-me")


def test_only_get_is_allowed() -> None:
    assert Client().post("/metrics").status_code == 405


def test_the_scrape_costs_a_fixed_number_of_queries(django_assert_max_num_queries: Any) -> None:
    for i in range(5):
        node_create(f"node-{i}", gpus=8)

    with django_assert_max_num_queries(3):
        scrape()
