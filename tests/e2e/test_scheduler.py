"""Scheduler end to end: real agents with simulated GPUs run real command jobs; faults
(a killed agent, XID 48, a network partition) requeue them onto healthy GPUs."""

import sys
import time

import psutil
import pytest
from playwright.sync_api import Page, expect

from tests.e2e.agents import (
    DETECTION,
    FAULT_SETTINGS,
    LOST_AFTER,
    PASS_INTERVAL,
    Agents,
    Partition,
    nodes_by_name,
    nodes_ready,
    wait_for,
)
from tests.e2e.conftest import ADMIN_PASSWORD, ADMIN_USER, Console, PageGuard
from tests.e2e.jobs import cancel, event_kinds, job_get, running_on, submit
from tests.e2e.test_browser import sign_in

pytestmark = pytest.mark.e2e

AGENTS = ("sched-a", "sched-b")
WORKSPACE = "Research"


@pytest.fixture(scope="module")
def console_settings() -> dict[str, str]:
    return FAULT_SETTINGS


def test_a_command_job_runs_on_a_simulated_node_and_succeeds(
    console: Console, agents: Agents, token: str, workspace_id: int
) -> None:
    command = "echo GPUS=$CUDA_VISIBLE_DEVICES JOB=$PODIUM_JOB_ID; sleep 1"
    job = submit(console, token, workspace_id, command=command, gpus_per_node=2)

    done = wait_for(
        lambda: (j := job_get(console, token, job["id"]))["state"] == "succeeded" and j,
        30,
        "the job succeeded",
    )

    assert done["exit_code"] == 0
    (rank,) = done["allocation"]
    assert rank["node"] in AGENTS
    assert len(rank["gpus"]) == 2
    kinds = event_kinds(console, token, job["id"])
    assert kinds[:1] == ["submitted"]
    assert [k for k in kinds if k in ("scheduled", "starting", "running", "succeeded")] == [
        "scheduled",
        "starting",
        "running",
        "succeeded",
    ]


def test_killing_an_agent_requeues_its_job_onto_another_node_within_detection_and_a_pass(
    console: Console, agents: Agents, token: str, workspace_id: int
) -> None:
    job = submit(console, token, workspace_id, gpus_per_node=8)
    first = wait_for(lambda: running_on(console, token, job["id"]), 30, "the job running")
    victim = first["allocation"][0]["node"]
    survivor = next(n for n in AGENTS if n != victim)

    killed_at = time.time()
    agents.kill(victim)
    moved = wait_for(
        lambda: (
            (j := running_on(console, token, job["id"]))
            and j["allocation"][0]["node"] == survivor
            and j
        ),
        DETECTION + 3 * PASS_INTERVAL + 5,
        "the job running on the other node",
    )
    elapsed = time.time() - killed_at
    sys.stderr.write(f"\nagent killed: job running again on {survivor} after {elapsed:.2f} s\n")

    assert elapsed <= DETECTION + 2 * PASS_INTERVAL + 2
    assert moved["attempt"] == first["attempt"] + 1
    assert moved["restarts"] == 0
    kinds = event_kinds(console, token, job["id"])
    assert "fault" in kinds
    assert nodes_by_name(console, token)[victim]["state"] == "lost"

    agents.start(victim)
    wait_for(lambda: nodes_ready(console, token, (victim,)), 30, "the restarted node ready")
    second = submit(console, token, workspace_id, gpus_per_node=8)
    back = wait_for(lambda: running_on(console, token, second["id"]), 30, "a job on the node")
    assert back["allocation"][0]["node"] == victim
    cancel(console, token, job["id"])
    cancel(console, token, second["id"])


def test_xid_48_takes_the_gpu_out_of_the_pool_and_its_job_restarts_on_healthy_gpus(
    console: Console, agents: Agents, token: str, workspace_id: int
) -> None:
    job = submit(console, token, workspace_id, gpus_per_node=4)
    first = wait_for(lambda: running_on(console, token, job["id"]), 30, "the job running")
    rank = first["allocation"][0]
    bad = rank["gpus"][0]

    status, body = console.api(
        "POST",
        f"/api/nodes/{rank['node_id']}/gpus/{bad}/faults",
        token=token,
        body={"fault": "xid", "code": 48},
    )
    assert status == 202, body
    moved = wait_for(
        lambda: (
            (j := running_on(console, token, job["id"])) and j["attempt"] > first["attempt"] and j
        ),
        20,
        "the job running again",
    )

    again = moved["allocation"][0]
    if again["node_id"] == rank["node_id"]:
        assert bad not in again["gpus"]
    assert moved["restarts"] == 0
    status, body = console.api(
        "POST", f"/api/nodes/{rank['node_id']}/gpus/{bad}/return-to-service", token=token
    )
    assert status == 200, body
    cancel(console, token, job["id"])


def test_a_partitioned_agent_kills_its_job_processes(
    console: Console, agents: Agents, token: str, workspace_id: int
) -> None:
    relay = Partition(console.port)
    try:
        agents.start("sched-p", server=relay.url)
        wait_for(lambda: nodes_ready(console, token, ("sched-p",)), 30, "the relayed node ready")
        nodes = nodes_by_name(console, token)
        for name in AGENTS:
            status, body = console.api(
                "POST", f"/api/nodes/{nodes[name]['id']}/cordon", token=token, body={}
            )
            assert status == 200, body
        job = submit(console, token, workspace_id, gpus_per_node=8)
        first = wait_for(lambda: running_on(console, token, job["id"]), 30, "the job running")
        assert first["allocation"][0]["node"] == "sched-p"
        pid = first["allocation"][0]["pid"]
        assert psutil.pid_exists(pid)

        cut_at = time.time()
        relay.cut()
        killed_at = lost_at = None
        deadline = time.monotonic() + LOST_AFTER + 5
        while (killed_at is None or lost_at is None) and time.monotonic() < deadline:
            if killed_at is None and not psutil.pid_exists(pid):
                killed_at = time.time() - cut_at
            if lost_at is None and nodes_by_name(console, token)["sched-p"]["state"] == "lost":
                lost_at = time.time() - cut_at
            time.sleep(0.1)
        sys.stderr.write(
            f"\nagent cut off: job killed after {killed_at} s, node lost after {lost_at} s\n"
        )

        assert killed_at is not None, "the cut-off agent did not kill its job"
        assert lost_at is not None, "the console did not declare the node lost"
        assert killed_at < lost_at
        assert agents.procs["sched-p"].poll() is None
        for name in AGENTS:
            status, body = console.api(
                "POST", f"/api/nodes/{nodes[name]['id']}/uncordon", token=token
            )
            assert status == 200, body
        moved = wait_for(
            lambda: (
                (j := running_on(console, token, job["id"]))
                and j["allocation"][0]["node"] in AGENTS
                and j
            ),
            DETECTION + 10,
            "the job running on a reachable node",
        )
        assert moved["restarts"] == 0
        cancel(console, token, job["id"])
    finally:
        agents.kill("sched-p")
        relay.close()


def test_the_queue_page_says_why_a_job_waits_and_shows_it_start_live(
    page: Page, console: Console, agents: Agents, token: str, workspace_id: int, guard: PageGuard
) -> None:
    big = submit(console, token, workspace_id, name="too-big", gpus_per_node=8, nodes=2)
    first = wait_for(lambda: running_on(console, token, big["id"]), 30, "the 2-node job running")
    waiting = submit(console, token, workspace_id, name="waits", gpus_per_node=8)
    sign_in(page, ADMIN_USER, ADMIN_PASSWORD)

    page.goto("/scheduler/")
    expect(page.locator("#live-state")).to_have_text("live")
    row = page.locator(f"#queue-job-{waiting['id']}")
    expect(row).to_contain_text("waits")
    expect(row.locator("td.reason")).to_contain_text("8")
    cancel(console, token, big["id"])

    expect(page.locator(f"#queue-job-{waiting['id']}")).to_have_count(0, timeout=15_000)
    expect(page.locator(f"#running-job-{waiting['id']}")).to_be_visible(timeout=15_000)
    assert first["allocation"][0]["node"] in AGENTS
    cancel(console, token, waiting["id"])
    guard.assert_clean()
