"""The job output, metrics, checkpoints and goodput endpoints."""

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from django.test import Client
from django.utils import timezone

from apps.accounts.models import User, Workspace
from apps.scheduler.models import Allocation, Job, JobEvent
from apps.training.models import Checkpoint, LogLine, MetricPoint
from podium import sdk
from tests.api_base import Operation, WorkspaceScopedAPITests
from tests.scheduler.factories import job_create, pool_create, scheduled_node_create

pytestmark = pytest.mark.django_db


def running_job(workspace: Workspace) -> Job:
    """A running job with two lines of output per rank, a metrics point and a checkpoint."""
    pool = pool_create(f"pool-{workspace.pk}")
    scheduled_node_create(f"gpu-{workspace.pk}", pool)
    job = job_create(workspace, pool, state=Job.State.RUNNING)
    allocation = Allocation.objects.get(job=job)
    now = timezone.now()
    LogLine.objects.bulk_create(
        LogLine(job=job, allocation=allocation, attempt=1, rank=0, seq=seq, at=now, line=text)
        for seq, text in enumerate(["step 1 loss 2.0", "step 2 loss 1.5"])
    )
    MetricPoint.objects.create(
        job=job, allocation=allocation, seq=9, attempt=1, step=2, at=now, values={"loss": 1.5}
    )
    Checkpoint.objects.create(job=job, step=2, path="/c/2", complete=True, written_at=now)
    return job


class TestJobRunAPI(WorkspaceScopedAPITests):
    operations: ClassVar = [
        Operation("logs", "get", lambda ws, job: f"/api/jobs/{job.pk}/logs"),
        Operation("download", "get", lambda ws, job: f"/api/jobs/{job.pk}/logs/download"),
        Operation("metrics", "get", lambda ws, job: f"/api/jobs/{job.pk}/metrics"),
        Operation("checkpoints", "get", lambda ws, job: f"/api/jobs/{job.pk}/checkpoints"),
        Operation("goodput", "get", lambda ws, job: f"/api/jobs/{job.pk}/goodput"),
        Operation(
            "pin",
            "post",
            lambda ws, job: f"/api/jobs/{job.pk}/checkpoints/2/pin",
            audit_action="checkpoint.pin",
        ),
    ]

    def make_object(self, workspace: Workspace) -> Job:
        return running_job(workspace)

    def snapshot(self, workspace: Workspace) -> Any:
        return sorted(
            Checkpoint.objects.filter(job__workspace=workspace).values_list("step", "pinned")
        )


@pytest.fixture
def job(workspace: Workspace) -> Job:
    return running_job(workspace)


@pytest.fixture
def client(member: User, api_client: Callable[[User], Client]) -> Client:
    return api_client(member)


def test_logs_follow_a_cursor_and_filter_by_rank_and_text(job: Job, client: Client) -> None:
    response = client.get(f"/api/jobs/{job.pk}/logs")
    assert response["Content-Type"].startswith("text/plain")
    assert response.content.decode() == "[rank 0] step 1 loss 2.0\n[rank 0] step 2 loss 1.5\n"
    assert response["X-Podium-Job-State"] == "running"
    cursor = int(response["X-Podium-Cursor"])

    assert client.get(f"/api/jobs/{job.pk}/logs?since={cursor}").content == b""
    assert client.get(f"/api/jobs/{job.pk}/logs?since={cursor}")["X-Podium-Cursor"] == str(cursor)
    only = client.get(f"/api/jobs/{job.pk}/logs?rank=0&q=STEP 2")
    assert only.content.decode() == "step 2 loss 1.5\n"


def test_a_log_download_holds_every_line_with_attempt_and_rank(job: Job, client: Client) -> None:
    response = client.get(f"/api/jobs/{job.pk}/logs/download")

    assert response["Content-Disposition"] == f'attachment; filename="job-{job.pk}.log"'
    assert b"".join(response.streaming_content).decode().splitlines() == [
        "[attempt 1 rank 0] step 1 loss 2.0",
        "[attempt 1 rank 0] step 2 loss 1.5",
    ]


def test_bad_log_parameters_name_the_field(job: Job, client: Client) -> None:
    response = client.get(f"/api/jobs/{job.pk}/logs?limit=0")

    assert response.status_code == 422
    assert response.json()["field"] == "limit"


def test_metrics_come_with_the_timeline_markers(job: Job, client: Client) -> None:
    JobEvent.objects.create(job=job, attempt=1, kind="fault", reason="gpu-1 was lost")
    JobEvent.objects.create(job=job, attempt=1, kind="running", reason="started")

    body = client.get(f"/api/jobs/{job.pk}/metrics").json()

    assert [(p["step"], p["values"]) for p in body["points"]] == [(2, {"loss": 1.5})]
    assert [m["kind"] for m in body["markers"]] == ["fault"]
    later = client.get(f"/api/jobs/{job.pk}/metrics?after={body['cursor']}").json()
    assert later["points"] == []


def test_checkpoints_refresh_from_storage(
    job: Job, client: Client, settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RANK", raising=False)
    settings.PODIUM_CHECKPOINT_ROOT = tmp_path
    sdk.save(7, {"w": b"1"}, directory=tmp_path / f"job-{job.pk}")

    body = client.get(f"/api/jobs/{job.pk}/checkpoints?refresh=true").json()

    assert [(c["step"], c["complete"]) for c in body] == [(7, True)]
    assert Checkpoint.objects.get(job=job, step=2).deleted


def test_unpinning_lets_retention_prune_again(job: Job, client: Client) -> None:
    Checkpoint.objects.filter(job=job).update(pinned=True)

    response = client.delete(f"/api/jobs/{job.pk}/checkpoints/2/pin")

    assert response.status_code == 200
    assert response.json()["pinned"] is False


def test_goodput_of_a_job_and_of_its_workspace(
    job: Job, client: Client, workspace: Workspace
) -> None:
    started = timezone.now() - timedelta(seconds=100)
    JobEvent.objects.create(job=job, attempt=1, kind="running", to_state="running")
    JobEvent.objects.filter(job=job, kind="running").update(at=started)
    MetricPoint.objects.filter(job=job).update(at=started + timedelta(seconds=10))

    one = client.get(f"/api/jobs/{job.pk}/goodput").json()
    total = client.get(f"/api/training/goodput?workspace_id={workspace.pk}").json()

    assert one["wall_seconds"] == pytest.approx(100, abs=5)
    assert one["ratio"] == pytest.approx(0.9, abs=0.05)
    assert one["overhead_seconds"] == pytest.approx(10, abs=1)
    assert total["jobs"] == 1
    assert total["productive_seconds"] == pytest.approx(one["productive_seconds"], abs=5)
