"""Training jobs through the API for end-to-end tests: the plain example's command, what
a job reported (metrics, output, checkpoints, timeline), waiting for steps, and killing a
node the way a power cut would."""

import contextlib
import os
import signal
import time
from typing import Any

import psutil
import pytest

from tests.e2e.agents import Agents, wait_for
from tests.e2e.conftest import ROOT, Console
from tests.e2e.jobs import job_get, submit

PLAIN = ROOT / "examples" / "plain" / "train.py"
TINY_GPT = ROOT / "examples" / "tiny_gpt" / "train.py"
TERMINAL = ("succeeded", "failed", "cancelled")


def plain_command(*, steps: int, checkpoint_every: int, step_sleep: float) -> str:
    """The plain example's command line, as a job runs it with the node's Python."""
    return (
        f"python {PLAIN} --steps {steps} --checkpoint-every {checkpoint_every} "
        f"--step-sleep {step_sleep:g}"
    )


def two_node_torchrun_submit(
    console: Console, token: str, workspace_id: int, **fields: Any
) -> dict[str, Any]:
    """Submit a torchrun job of one process on one GPU on each of two nodes."""
    shape = {"kind": "torchrun", "nodes": 2, "gpus_per_node": 1, "procs_per_node": 1}
    return submit(console, token, workspace_id, **shape, **fields)


def metric_points(console: Console, token: str, job_id: int) -> list[dict[str, Any]]:
    """Every metrics point the job reported, oldest first, read page after page."""
    points: list[dict[str, Any]] = []
    cursor = 0
    while True:
        status, body = console.api("GET", f"/api/jobs/{job_id}/metrics?after={cursor}", token=token)
        assert status == 200, body
        if not body["points"]:
            return points
        points += body["points"]
        cursor = body["cursor"]


def steps_of(points: list[dict[str, Any]], attempt: int) -> list[int]:
    """The steps one attempt reported, in step order."""
    return sorted(p["step"] for p in points if p["attempt"] == attempt)


def last_step(console: Console, token: str, job_id: int, attempt: int) -> int:
    """The highest step the attempt reported so far (0 before its first report)."""
    return max(steps_of(metric_points(console, token, job_id), attempt), default=0)


def wait_step(
    console: Console, token: str, job_id: int, *, attempt: int, step: int, timeout: float
) -> int:
    """Wait until the attempt has reported ``step`` or later; the step it reached."""
    return wait_for(
        lambda: (reached := last_step(console, token, job_id, attempt)) >= step and reached,
        timeout,
        f"attempt {attempt} of job {job_id} at step {step}",
        interval=0.25,
    )


def log_text(console: Console, token: str, job_id: int, **filters: Any) -> str:
    """The job's output lines as the log API returns them (plain text)."""
    query = "&".join(f"{key}={value}" for key, value in {"limit": 10_000, **filters}.items())
    status, body = console.api("GET", f"/api/jobs/{job_id}/logs?{query}", token=token)
    assert status == 200, body
    assert isinstance(body, str), body
    return body


def checkpoints(console: Console, token: str, job_id: int) -> list[dict[str, Any]]:
    """The job's checkpoints as the console lists them after reading storage, newest first."""
    status, body = console.api("GET", f"/api/jobs/{job_id}/checkpoints?refresh=true", token=token)
    assert status == 200, body
    return list(body)


def timeline(console: Console, token: str, job_id: int) -> list[dict[str, Any]]:
    """The job's timeline, oldest first."""
    status, body = console.api("GET", f"/api/jobs/{job_id}/events?limit=500", token=token)
    assert status == 200, body
    return list(body["items"] if isinstance(body, dict) else body)


def kinds_in_order(events: list[dict[str, Any]], *kinds: str) -> bool:
    """Whether the timeline has ``kinds`` in this order (other lines between them allowed)."""
    seen = iter(event["kind"] for event in events)
    return all(kind in seen for kind in kinds)


def timeline_text(events: list[dict[str, Any]]) -> str:
    """The timeline as lines of time, attempt, kind and reason (for failure messages)."""
    return "\n".join(f"{e['at']} #{e['attempt']} {e['kind']}: {e['reason']}" for e in events)


def finished(console: Console, token: str, job_id: int, timeout: float) -> dict[str, Any]:
    """Wait for the job to end; the job as it ended."""
    return wait_for(
        lambda: (job := job_get(console, token, job_id))["state"] in TERMINAL and job,
        timeout,
        f"job {job_id} finished",
        interval=0.5,
    )


def attempt_running(
    console: Console, token: str, job_id: int, attempt: int, timeout: float
) -> dict[str, Any]:
    """Wait until the given attempt runs with every rank started; the job then. On a
    timeout, fail with the job's state and timeline."""
    deadline = time.monotonic() + timeout
    while True:
        job = job_get(console, token, job_id)
        if (
            job["attempt"] == attempt
            and job["state"] == "running"
            and all(a["state"] == "running" for a in job["allocation"])
        ):
            return job
        if time.monotonic() > deadline:
            pytest.fail(
                f"attempt {attempt} of job {job_id} was not running within {timeout:g} s: "
                f"attempt {job['attempt']} is {job['state']} ({job['state_reason']})\n"
                + timeline_text(timeline(console, token, job_id)),
                pytrace=False,
            )
        time.sleep(0.2)


def node_kill(agents: Agents, name: str, job_pids: list[int]) -> None:
    """SIGKILL a node's agent, then its job processes (each leads its process group), as
    a node losing power would: nothing gets to say goodbye. Returns once all are gone."""
    procs: list[psutil.Process] = []
    for pid in job_pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            leader = psutil.Process(pid)
            procs += [leader, *leader.children(recursive=True)]
    agents.kill(name)
    for pid in job_pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    _, alive = psutil.wait_procs(procs, timeout=10)
    assert not alive, f"job processes outlived SIGKILL: {alive}"
