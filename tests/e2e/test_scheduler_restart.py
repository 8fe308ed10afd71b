"""A console restart while jobs run: nothing is lost or started twice; the agent keeps its
job running and the console reconciles with what actually runs."""

from collections.abc import Iterator

import psutil
import pytest

from tests.e2e.agents import Agents, agents_running, nodes_ready, wait_for
from tests.e2e.conftest import ADMIN_PASSWORD, ADMIN_USER, Console
from tests.e2e.jobs import LOOP, cancel, job_get, running_on, submit

pytestmark = pytest.mark.e2e

# Longer than a console restart takes, so the agent does not fence its job meanwhile.
LOST_AFTER = 30.0


@pytest.fixture(scope="module")
def console_settings() -> dict[str, str]:
    return {
        "PODIUM_NODE_SUSPECT_AFTER": "20",
        "PODIUM_NODE_LOST_AFTER": str(LOST_AFTER),
        "PODIUM_SCHEDULER_INTERVAL": "1",
        "PODIUM_LOCAL_AGENT": "0",
    }


@pytest.fixture(scope="module")
def agent(console: Console, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agents]:
    token = console.token(ADMIN_USER, ADMIN_PASSWORD)
    with agents_running(
        console, token, ("restart-a",), tmp_path_factory.mktemp("agents")
    ) as running:
        yield running


def test_a_console_restart_neither_loses_nor_restarts_a_running_job(
    console: Console, agent: Agents
) -> None:
    token = console.token(ADMIN_USER, ADMIN_PASSWORD)
    status, workspace = console.api("POST", "/api/workspaces", token=token, body={"name": "Ops"})
    assert status == 201, workspace
    job = submit(console, token, workspace["id"], command=LOOP, gpus_per_node=4)
    before = wait_for(lambda: running_on(console, token, job["id"]), 30, "the job running")
    pid = before["allocation"][0]["pid"]

    assert console.restart() == 0
    token = console.token(ADMIN_USER, ADMIN_PASSWORD)
    wait_for(lambda: nodes_ready(console, token, ("restart-a",)), 30, "the agent reconnected")
    after = wait_for(lambda: running_on(console, token, job["id"]), 10, "the job still running")

    assert after["attempt"] == before["attempt"]
    assert after["allocation"][0]["pid"] == pid
    assert psutil.pid_exists(pid)
    cancel(console, token, job["id"])
    assert job_get(console, token, job["id"])["attempt"] == before["attempt"]
    wait_for(lambda: not psutil.pid_exists(pid), 10, "the cancelled job's process gone")
