"""Jobs through the API for end-to-end tests: submit, read, wait, cancel."""

import sys
from typing import Any

from tests.e2e.agents import wait_for
from tests.e2e.conftest import Console

# A job that prints a line every 0.3 s until stopped.
LOOP = (
    f"{sys.executable} -c \"import time\nwhile True: print('tick', flush=True); time.sleep(0.3)\""
)


def submit(console: Console, token: str, workspace_id: int, **fields: Any) -> dict[str, Any]:
    body = {"workspace_id": workspace_id, "name": "e2e", "command": LOOP, **fields}
    status, job = console.api("POST", "/api/jobs", token=token, body=body)
    assert status == 201, job
    return job


def job_get(console: Console, token: str, job_id: int) -> dict[str, Any]:
    status, job = console.api("GET", f"/api/jobs/{job_id}", token=token)
    assert status == 200, job
    return job


def running_on(console: Console, token: str, job_id: int) -> dict[str, Any] | None:
    """The job while it runs with every rank started, else None."""
    job = job_get(console, token, job_id)
    if job["state"] == "running" and all(a["state"] == "running" for a in job["allocation"]):
        return job
    return None


def cancel(console: Console, token: str, job_id: int) -> None:
    status, body = console.api("POST", f"/api/jobs/{job_id}/cancel", token=token)
    assert status == 200, body
    wait_for(
        lambda: job_get(console, token, job_id)["state"] == "cancelled", 15, "the job cancelled"
    )


def event_kinds(console: Console, token: str, job_id: int) -> list[str]:
    status, body = console.api("GET", f"/api/jobs/{job_id}/events?limit=500", token=token)
    assert status == 200, body
    items = body["items"] if isinstance(body, dict) else body
    return [e["kind"] for e in items]
