"""Training pages: the overview and its examples, the training panels of a job's page and
what they fetch, and the submit form's training fields."""

import json
import re
import shlex
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.accounts.models import Workspace
from apps.audit.models import AuditEntry
from apps.monitoring.models import GpuSample, Node
from apps.scheduler.models import Allocation, Job, JobEvent, Pool
from apps.training.models import Checkpoint, Dataset, JobDataset, LogLine, MetricPoint
from apps.training.templatetags.training import duration
from podium import sdk
from tests.conftest import Cast
from tests.pages import field_label, html, job_form, row_of
from tests.scheduler.factories import job_create, pool_create, scheduled_node_create

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def pool(db: None) -> Pool:
    """The default pool with one shared node of 8 GPUs."""
    pool = pool_create("a100", is_default=True)
    scheduled_node_create("gpu-1", pool)
    return pool


@pytest.fixture(autouse=True)
def checkpoint_root(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "checkpoints"
    settings.PODIUM_CHECKPOINT_ROOT = root
    monkeypatch.delenv("RANK", raising=False)
    return root


def running_job(cast: Cast, pool: Pool, **fields: Any) -> Job:
    """A job of the member's workspace running its first attempt for 100 s on gpu-1."""
    job = job_create(
        cast.workspace, pool, state=Job.State.RUNNING, submitted_by=cast.member, **fields
    )
    event = JobEvent.objects.create(
        job=job, attempt=1, kind="running", from_state="starting", to_state="running"
    )
    JobEvent.objects.filter(pk=event.pk).update(at=timezone.now() - timedelta(seconds=100))
    return job


def allocation_of(job: Job, *, attempt: int = 1, rank: int = 0) -> Allocation:
    """The job's rank in an attempt, placed on gpu-1 when the factory did not place it."""
    allocation, _ = Allocation.objects.get_or_create(
        job=job,
        attempt=attempt,
        rank=rank,
        defaults={"node": Node.objects.get(name="gpu-1"), "gpus": [rank]},
    )
    return allocation


def output(job: Job, lines: list[str], *, rank: int = 0, attempt: int = 1) -> None:
    allocation = allocation_of(job, attempt=attempt, rank=rank)
    start = LogLine.objects.filter(allocation=allocation).count()
    LogLine.objects.bulk_create(
        LogLine(
            job=job,
            allocation=allocation,
            attempt=attempt,
            rank=rank,
            seq=start + n,
            at=timezone.now(),
            line=text,
        )
        for n, text in enumerate(lines)
    )


def report(job: Job, steps: range, *, attempt: int = 1, seconds_ago: float = 50) -> None:
    at = timezone.now() - timedelta(seconds=seconds_ago)
    allocation = allocation_of(job, attempt=attempt)
    start = MetricPoint.objects.filter(allocation=allocation).count()
    MetricPoint.objects.bulk_create(
        MetricPoint(
            job=job,
            allocation=allocation,
            seq=start + n,
            attempt=attempt,
            step=step,
            at=at + timedelta(seconds=n),
            values={"loss": 2.0 / (step + 1), "lr": 0.01},
        )
        for n, step in enumerate(steps)
    )


def checkpoint(job: Job, step: int, **fields: Any) -> Checkpoint:
    values = {
        "path": f"/ckpt/job-{job.pk}/{step}",
        "attempt": 1,
        "size_bytes": 2048,
        "file_count": 2,
        "complete": True,
        "written_at": timezone.now(),
    }
    return Checkpoint.objects.create(job=job, step=step, **(values | fields))


def run_example(client: Client, example: str, workspace: Workspace) -> Any:
    """Post the overview's example form: run ``example`` in ``workspace``."""
    return client.post("/training/examples/run/", {"example": example, "workspace": workspace.pk})


# Overview ----------------------------------------------------------------------------------


def test_the_training_page_shows_recent_jobs_their_progress_and_goodput(
    cast: Cast, pool: Pool, session_client: Callable[..., Client]
) -> None:
    job = running_job(cast, pool, name="pretrain")
    report(job, range(1, 41))
    job_create(cast.other_workspace, pool, name="secret-run")

    response = session_client(cast.member).get("/training/")

    page = html(response)
    assert response.status_code == 200
    row = row_of(page, f"training-job-{job.pk}")
    assert "pretrain" in row
    assert ">40<" in row
    assert "0.0488" in row
    assert re.search(r'<td class="num">\d+\.\d %</td>', row)
    assert "secret-run" not in page
    assert f'id="workspace-goodput-{cast.workspace.pk}"' in page
    assert f'id="workspace-goodput-{cast.other_workspace.pk}"' not in page
    assert 'href="/training/datasets/"' in page
    assert 'href="/scheduler/jobs/new/"' in page
    assert 'id="example-tiny_gpt"' in page
    assert 'id="example-plain"' in page
    assert f'<option value="{cast.workspace.pk}">Vision</option>' in page
    assert "No node with a GPU is connected" not in page
    assert 'href="/training/" aria-current="page"' in page


def test_the_training_page_says_when_no_gpu_is_connected(
    cast: Cast, session_client: Callable[..., Client]
) -> None:
    Node.objects.update(state=Node.State.LOST)

    page = html(session_client(cast.member).get("/training/"))

    assert "No node with a GPU is connected; <code>make demo</code> adds simulated ones." in page


def test_a_viewer_is_offered_no_example(cast: Cast, session_client: Callable[..., Client]) -> None:
    page = html(session_client(cast.viewer).get("/training/"))

    assert 'id="examples-refused"' in page
    assert 'id="example-run"' not in page


@pytest.mark.parametrize(
    ("example", "script", "name"),
    [
        ("plain", "examples/plain/train.py", "example-plain"),
        ("tiny_gpt", "examples/tiny_gpt/train.py", "example-tiny-gpt"),
    ],
)
def test_run_the_example_submits_it_on_one_gpu_and_opens_its_page(
    cast: Cast,
    session_client: Callable[..., Client],
    example: str,
    script: str,
    name: str,
) -> None:
    response = run_example(session_client(cast.member), example, cast.workspace)

    job = Job.objects.get()
    path = Path(django_settings.BASE_DIR) / script
    words = shlex.split(job.command)
    assert response.status_code == 302
    assert response["Location"] == f"/scheduler/jobs/{job.pk}/"
    assert path.is_file()
    assert words[:2] == ["python", str(path)]
    assert "--steps" in words
    assert "--checkpoint-every" in words
    assert (job.name, job.kind, job.nodes, job.gpus_per_node) == (name, "command", 1, 1)
    assert (job.workspace, job.submitted_by) == (cast.workspace, cast.member)
    assert AuditEntry.objects.filter(action="job.submit", actor=cast.member).count() == 1


def test_run_the_example_needs_the_csrf_token(
    cast: Cast, session_client: Callable[..., Client]
) -> None:
    client = session_client(cast.member, csrf=True)

    response = run_example(client, "plain", cast.workspace)

    assert response.status_code == 403
    assert not Job.objects.exists()


def test_a_viewer_cannot_run_an_example_nor_an_outsider_in_another_workspace(
    cast: Cast, session_client: Callable[..., Client]
) -> None:
    viewer = run_example(session_client(cast.viewer), "plain", cast.workspace)
    outsider = run_example(session_client(cast.outsider), "plain", cast.workspace)
    unknown = run_example(session_client(cast.member), "rm -rf", cast.workspace)

    assert viewer.status_code == 403
    assert outsider.status_code == 404
    assert unknown.status_code == 302
    assert not Job.objects.exists()
    assert not AuditEntry.objects.filter(action="job.submit").exists()


# Job page ----------------------------------------------------------------------------------


def test_the_job_page_shows_goodput_checkpoints_launch_and_the_live_panels(
    cast: Cast, pool: Pool, session_client: Callable[..., Client]
) -> None:
    job = running_job(
        cast,
        pool,
        kind=Job.Kind.TORCHRUN,
        procs_per_node=4,
        launch_env={"MASTER_ADDR": "10.0.0.1", "PODIUM_RESUME_FROM": "/ckpt/job-1/100"},
    )
    checkpoint(job, 100, pinned=True, resumed_count=1)
    checkpoint(job, 150, complete=False, problem="manifest missing")

    member = html(session_client(cast.member).get(f"/scheduler/jobs/{job.pk}/"))
    viewer = html(session_client(cast.viewer).get(f"/scheduler/jobs/{job.pk}/"))

    assert 'id="job-training-panels"' in member
    assert f'hx-get="/training/jobs/{job.pk}/panels/"' in member
    assert 'id="goodput-ratio">100.0 %<' in member
    row = row_of(member, "checkpoint-100")
    assert "2.0\xa0KB" in row
    assert "pinned" in row
    assert 'value="0"' in row
    assert ">Unpin<" in row
    assert "manifest missing" in member
    assert 'id="job-kind">torchrun<' in member
    assert 'id="job-procs">4<' in member
    assert "<code>PODIUM_RESUME_FROM</code>" in member
    assert "<code>/ckpt/job-1/100</code>" in member
    config = member[member.index('id="job-training-config"') :]
    config = json.loads(config[config.index(">") + 1 : config.index("</script>")])
    assert config["urls"]["job_logs"] == f"/training/jobs/{job.pk}/logs/"
    assert config["download"] == f"/api/jobs/{job.pk}/logs/download"
    assert "podium/training/job_training.js" in member
    assert "vendor/plotly.min.js" in member
    assert 'id="log-earlier"' in member
    assert f"/training/jobs/{job.pk}/checkpoints/100/pin/" not in viewer
    assert 'id="job-training-panels"' in viewer


def test_another_workspaces_job_is_not_found(
    cast: Cast, pool: Pool, session_client: Callable[..., Client]
) -> None:
    job = job_create(cast.other_workspace, pool, state=Job.State.RUNNING)
    checkpoint(job, 10)
    client = session_client(cast.member)

    for url in ("logs", "metrics", "gpus", "panels"):
        assert client.get(f"/training/jobs/{job.pk}/{url}/").status_code == 404, url
    assert client.post(f"/training/jobs/{job.pk}/checkpoints/refresh/").status_code == 404
    pin = client.post(f"/training/jobs/{job.pk}/checkpoints/10/pin/", {"pinned": "1"})
    assert pin.status_code == 404
    assert not Checkpoint.objects.get(job=job).pinned


def test_the_logs_read_the_newest_lines_and_page_back_by_rank_attempt_and_text(
    cast: Cast, pool: Pool, session_client: Callable[..., Client]
) -> None:
    job = running_job(cast, pool)
    output(job, [f"step {n}" for n in range(10)])
    output(job, ["rank one says hi", "error: disk full"], rank=1)
    output(job, ["resumed at 5"], attempt=2)
    client = session_client(cast.member)
    url = f"/training/jobs/{job.pk}/logs/"

    tail = client.get(url, {"limit": 3}).json()
    ids = [row[0] for row in tail["lines"]]
    older = client.get(url, {"limit": 100, "before": ids[0]}).json()
    by_key = client.get(url, {"limit": 2, "before_key": "1:0:9"}).json()
    rank = client.get(url, {"rank": 1}).json()
    attempt = client.get(url, {"attempt": 2}).json()
    found = client.get(url, {"q": "DISK"}).json()
    bad = client.get(url, {"rank": "x"})

    assert [row[1:] for row in tail["lines"]] == [
        [1, 1, 0, "rank one says hi"],
        [1, 1, 1, "error: disk full"],
        [2, 0, 0, "resumed at 5"],
    ]
    assert tail["more_before"] is True
    assert [row[4] for row in older["lines"]] == [f"step {n}" for n in range(10)]
    assert older["more_before"] is False
    assert [row[4] for row in by_key["lines"]] == ["step 7", "step 8"]
    assert [row[4] for row in rank["lines"]] == ["rank one says hi", "error: disk full"]
    assert [row[4] for row in attempt["lines"]] == ["resumed at 5"]
    assert [row[4] for row in found["lines"]] == ["error: disk full"]
    assert bad.status_code == 400
    assert bad.json()["field"] == "rank"


def test_the_metrics_are_figures_per_name_with_a_trace_per_attempt_and_markers(
    cast: Cast, pool: Pool, session_client: Callable[..., Client]
) -> None:
    job = running_job(cast, pool)
    report(job, range(1, 31), seconds_ago=60)
    fault = JobEvent.objects.create(job=job, attempt=1, kind="fault", reason="node lost")
    JobEvent.objects.filter(pk=fault.pk).update(at=timezone.now() - timedelta(seconds=30))
    JobEvent.objects.create(
        job=job, attempt=2, kind="resume", reason="resuming from 20", data={"step": 20}
    )
    report(job, range(21, 26), attempt=2, seconds_ago=5)
    client = session_client(cast.member)

    answer = client.get(f"/training/jobs/{job.pk}/metrics/").json()
    markers = client.get(f"/training/jobs/{job.pk}/metrics/", {"part": "markers"}).json()

    assert answer["names"] == ["loss", "lr"]
    loss = answer["figures"]["loss"]
    assert [t["meta"]["attempt"] for t in loss["data"]] == [1, 2]
    assert loss["data"][1]["x"] == [21, 22, 23, 24, 25]
    assert [s["x0"] for s in loss["layout"]["shapes"]] == [20, 30]
    assert [a["text"] for a in loss["layout"]["annotations"]] == ["resume", "fault"]
    assert markers["shapes"] == loss["layout"]["shapes"]
    assert answer["template"]["data"] == []
    assert answer["colours"][0].startswith("#")


def test_the_gpu_chart_reads_the_attempts_gpus_and_then_what_is_new(
    cast: Cast, pool: Pool, session_client: Callable[..., Client]
) -> None:
    node = Node.objects.get(name="gpu-1")
    job = running_job(cast, pool, gpus_per_node=2, on=[(node, [2, 3])])
    now = time.time()
    Allocation.objects.filter(job=job).update(started_at=timezone.now() - timedelta(seconds=40))
    GpuSample.objects.bulk_create(
        GpuSample(node=node, gpu_index=index, ts=now - age, util=50.0 + index)
        for index in (1, 2, 3)
        for age in (300, 30, 20, 10)
    )
    client = session_client(cast.member)
    url = f"/training/jobs/{job.pk}/gpus/"

    first = client.get(url).json()
    newer = client.get(url, {"since": now - 12}).json()

    traces = first["figure"]["data"]
    assert [t["name"] for t in traces] == ["gpu-1 GPU 2", "gpu-1 GPU 3"]
    assert traces[0]["y"] == [52.0, 52.0, 52.0]
    assert first["live"] is True
    assert set(newer["traces"]) == {f"{node.pk}:2", f"{node.pk}:3"}
    assert newer["traces"][f"{node.pk}:3"]["y"] == [53.0, 53.0]

    Allocation.objects.filter(job=job).update(ended_at=timezone.now())
    ended = client.get(url).json()
    assert ended["live"] is False
    assert ended["figure"]["data"][1]["y"] == [53.0, 53.0, 53.0]


def test_members_pin_and_unpin_checkpoints_from_the_page(
    cast: Cast, pool: Pool, session_client: Callable[..., Client]
) -> None:
    job = running_job(cast, pool)
    checkpoint(job, 100)
    client = session_client(cast.member)
    url = f"/training/jobs/{job.pk}/checkpoints/100/pin/"

    pinned = client.post(url, {"pinned": "1"}, HTTP_HX_REQUEST="true")
    assert pinned.status_code == 200
    assert html(pinned).lstrip().startswith('<div id="job-training-panels"')
    assert Checkpoint.objects.get(job=job).pinned
    unpinned = client.post(url, {"pinned": "0"})
    assert unpinned.status_code == 302
    assert not Checkpoint.objects.get(job=job).pinned
    actions = AuditEntry.objects.order_by("pk").values_list("action", flat=True)
    assert list(actions) == ["checkpoint.pin", "checkpoint.unpin"]

    refused = session_client(cast.viewer).post(url, {"pinned": "1"})
    assert refused.status_code == 403
    assert not Checkpoint.objects.get(job=job).pinned


def test_checkpoints_are_read_again_from_storage(
    cast: Cast, pool: Pool, session_client: Callable[..., Client], checkpoint_root: Path
) -> None:
    job = running_job(cast, pool)
    saved = sdk.save(30, {"model.bin": b"weights"}, directory=checkpoint_root / f"job-{job.pk}")
    assert saved is not None

    response = session_client(cast.viewer).post(
        f"/training/jobs/{job.pk}/checkpoints/refresh/", HTTP_HX_REQUEST="true"
    )

    assert response.status_code == 200
    assert 'id="checkpoint-30"' in html(response)
    assert Checkpoint.objects.get(job=job).complete


def test_the_job_page_and_its_panels_cost_the_same_queries_however_much_the_job_wrote(
    cast: Cast, pool: Pool, session_client: Callable[..., Client]
) -> None:
    job = running_job(cast, pool)
    client = session_client(cast.member)
    urls = [
        f"/scheduler/jobs/{job.pk}/",
        f"/training/jobs/{job.pk}/panels/",
        f"/training/jobs/{job.pk}/logs/",
        f"/training/jobs/{job.pk}/metrics/",
        f"/training/jobs/{job.pk}/gpus/",
        "/training/",
    ]

    def queries() -> list[int]:
        counts = []
        for url in urls:
            with CaptureQueriesContext(connection) as captured:
                assert client.get(url).status_code == 200, url
            counts.append(len(captured))
        return counts

    output(job, ["a line"] * 5)
    report(job, range(1, 6))
    checkpoint(job, 1)
    few = queries()
    output(job, ["a line"] * 200)
    report(job, range(6, 300))
    for step in range(2, 30):
        checkpoint(job, step)
    many = queries()

    assert many == few


# Submit form -------------------------------------------------------------------------------


def test_the_submit_form_takes_torchrun_processes_resume_retention_and_datasets(
    cast: Cast, session_client: Callable[..., Client], make_dataset: Callable[..., Dataset]
) -> None:
    make_dataset(cast.workspace, "corpus", versions=2)
    client = session_client(cast.member)
    form = html(client.get("/scheduler/jobs/new/"))
    assert 'name="kind"' in form
    assert re.search(r'<input type="checkbox" name="resume"[^>]* checked', form)

    response = client.post(
        "/scheduler/jobs/new/",
        job_form(
            cast.workspace,
            name="gpt",
            kind="torchrun",
            command="train.py --steps 10",
            gpus_per_node=4,
            procs_per_node=2,
            checkpoint_keep=5,
            datasets=" corpus@1, ,",
        ),
    )

    job = Job.objects.get()
    assert response.status_code == 302
    assert (job.kind, job.procs_per_node, job.resume, job.checkpoint_keep) == (
        "torchrun",
        2,
        False,
        5,
    )
    assert list(JobDataset.objects.filter(job=job).values_list("ref", flat=True)) == ["corpus@1"]


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"procs_per_node": 0}, "procs_per_node", "between 1 and 256"),
        ({"checkpoint_keep": 0}, "checkpoint_keep", "between 1 and 1000"),
        ({"datasets": "nothing-here"}, "datasets", "there is no dataset named nothing-here"),
        ({"kind": "mpirun"}, "kind", "Select a valid choice"),
    ],
)
def test_the_submit_form_shows_training_errors_on_their_fields(
    cast: Cast,
    session_client: Callable[..., Client],
    change: dict[str, Any],
    field: str,
    message: str,
) -> None:
    data = job_form(cast.workspace, command="train.py", resume="on", **change)

    response = session_client(cast.member).post("/scheduler/jobs/new/", data)

    page = html(response)
    assert response.status_code == 400
    error = field_label(page, field)
    assert 'class="error"' in error
    assert message in error
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "\u2013"),
        (0.4, "0 s"),
        (59.6, "1 min 00 s"),
        (125, "2 min 05 s"),
        (7500, "2 h 05 min"),
    ],
)
def test_durations_read_in_the_largest_unit_that_fits(seconds: float | None, shown: str) -> None:
    assert duration(seconds) == shown
