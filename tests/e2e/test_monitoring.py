"""Monitoring end to end: real agents with simulated GPUs, the console, Prometheus, Chromium."""

import itertools
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.agents import Agents, agents_running, nodes_by_name, wait_for
from tests.e2e.conftest import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    Console,
    PageGuard,
    state_history,
    state_history_start,
)
from tests.e2e.test_browser import sign_in

pytestmark = pytest.mark.e2e

SUSPECT_AFTER = 3.0
LOST_AFTER = 5.0
# The sweeper runs every second and the page hears of it within a fleet frame.
STATE_SLACK = 2.5
# Silence is counted from the agent's last message, up to one batch interval before the kill.
AGENT_INTERVAL = 1.0
AGENTS = ("e2e-a", "e2e-b", "e2e-c")


@pytest.fixture(scope="module")
def console_settings() -> dict[str, str]:
    return {
        "PODIUM_NODE_SUSPECT_AFTER": str(SUSPECT_AFTER),
        "PODIUM_NODE_LOST_AFTER": str(LOST_AFTER),
        "PODIUM_TELEMETRY_FLUSH_INTERVAL": "1",
    }


@pytest.fixture(scope="module")
def admin_token(console: Console) -> str:
    return console.token(ADMIN_USER, ADMIN_PASSWORD)


@pytest.fixture(scope="module")
def agents(
    console: Console, admin_token: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Agents]:
    with agents_running(console, admin_token, AGENTS, tmp_path_factory.mktemp("agents")) as running:
        yield running


def node_id(console: Console, token: str, name: str) -> int:
    return int(nodes_by_name(console, token)[name]["id"])


def test_local_agent_reports_the_host_and_says_no_driver_was_found(
    console: Console, admin_token: str
) -> None:
    local = wait_for(
        lambda: [
            n
            for n in nodes_by_name(console, admin_token).values()
            if n["state"] == "ready" and n["gpu_backend"] == "none"
        ],
        30,
        "the local agent's node ready",
    )[0]

    status, detail = console.api("GET", f"/api/nodes/{local['id']}", token=admin_token)
    # A quiet agent connection outlives the channel layer's 5 s blocking reads.
    time.sleep(7)
    later = console.api("GET", f"/api/nodes/{local['id']}", token=admin_token)[1]

    assert status == 200, detail
    assert later["connected_at"] == detail["connected_at"]
    assert detail["gpu_status"] == "no NVIDIA driver found"
    assert detail["gpus"] == []
    assert detail["host"]["cpu"] is not None


def test_api_history_and_prometheus_export_carry_the_simulated_gpus(
    console: Console, agents: Agents, admin_token: str
) -> None:
    node = node_id(console, admin_token, "e2e-a")
    status, detail = console.api("GET", f"/api/nodes/{node}", token=admin_token)
    assert status == 200, detail
    assert len(detail["gpus"]) == 8
    assert all(gpu["simulated"] for gpu in detail["gpus"])

    history = wait_for(
        lambda: console.api(
            "GET", f"/api/nodes/{node}/gpus/0/history?range=15m", token=admin_token
        )[1].get("points"),
        15,
        "stored samples in the GPU history",
    )
    assert history[-1]["temp_c"] is not None

    status, text = console.api("GET", "/metrics", headers={"Accept": "text/plain"})
    assert status == 200
    assert 'DCGM_FI_DEV_GPU_UTIL{node="e2e-a",gpu="0"' in text
    assert "podium_node_heartbeat_age_seconds" in text


def test_the_overview_changes_live_and_xid_79_marks_the_node_unhealthy_within_2_s(
    page: Page, console: Console, agents: Agents, admin_token: str, guard: PageGuard
) -> None:
    sign_in(page, ADMIN_USER, ADMIN_PASSWORD)
    page.goto("/monitoring/")
    cell = page.locator('[data-node="e2e-b"][data-gpu="0"]')
    expect(cell).to_have_count(1)
    first = cell.get_attribute("data-power")
    expect(cell).not_to_have_attribute("data-power", first or "", timeout=5000)

    node = node_id(console, admin_token, "e2e-b")
    page.goto(f"/monitoring/nodes/{node}/")
    health = page.locator("#node-health")
    expect(health).to_have_attribute("data-health", "healthy")
    sent = time.monotonic()
    status, body = console.api(
        "POST",
        f"/api/nodes/{node}/gpus/3/faults",
        token=admin_token,
        body={"fault": "xid", "code": 79},
    )
    assert status == 202, body
    expect(health).to_have_attribute("data-health", "unhealthy", timeout=2000)
    assert time.monotonic() - sent <= 2.0

    detail = console.api("GET", f"/api/nodes/{node}", token=admin_token)[1]
    assert detail["health"] == "unhealthy"
    status, events = console.api("GET", f"/api/events?node={node}", token=admin_token)
    assert any(e["code"] == "79" and e["rule_class"] == "node_reboot" for e in events["items"])
    guard.assert_clean()


def test_a_killed_agent_turns_its_node_suspect_then_lost_in_the_configured_times(
    page: Page, console: Console, agents: Agents, guard: PageGuard
) -> None:
    sign_in(page, ADMIN_USER, ADMIN_PASSWORD)
    page.goto("/monitoring/")
    expect(page.locator("#node-e2e-c-state")).to_have_attribute("data-state", "ready")
    state_history_start(page, "node-e2e-c-state")

    killed = time.time()
    agents.kill("e2e-c")
    expect(page.locator("#node-e2e-c-state")).to_have_attribute(
        "data-state", "lost", timeout=(LOST_AFTER + STATE_SLACK + 2) * 1000
    )

    seen = {entry["state"]: entry["at"] - killed for entry in state_history(page)}
    earliest = -AGENT_INTERVAL - 0.5
    assert SUSPECT_AFTER + earliest <= seen["suspect"] <= SUSPECT_AFTER + STATE_SLACK, seen
    assert LOST_AFTER + earliest <= seen["lost"] <= LOST_AFTER + STATE_SLACK, seen
    guard.assert_clean()


def test_a_console_restart_loses_no_samples_and_agents_come_back_by_themselves(
    console: Console, agents: Agents, admin_token: str
) -> None:
    node = node_id(console, admin_token, "e2e-a")
    before = time.time()

    assert console.restart() == 0
    token = console.token(ADMIN_USER, ADMIN_PASSWORD)
    wait_for(
        lambda: nodes_by_name(console, token)["e2e-a"]["state"] == "ready",
        30,
        "the agent reconnected",
    )
    restarted = time.time()
    time.sleep(3)

    points = wait_for(
        lambda: console.api("GET", f"/api/nodes/{node}/gpus/0/history?range=15m", token=token)[
            1
        ].get("points"),
        10,
        "history after the restart",
    )
    stamps = [p["ts"] for p in points if before - 5 <= p["ts"] <= restarted]
    gaps = [b - a for a, b in itertools.pairwise(stamps) if b - a > 2.5]
    assert stamps
    assert not gaps, f"samples missing around the restart: gaps {gaps}"
