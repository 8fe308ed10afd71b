"""What a job's attempts start with and what their output leaves behind: the launch
environment, resume points, stored lines, metrics and checkpoints."""

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from apps.accounts.models import Workspace
from apps.monitoring.models import Node
from apps.scheduler import agents
from apps.scheduler.failures import failure_classify
from apps.scheduler.models import Allocation, Job, NodeSchedule, Pool
from apps.scheduler.passes import pass_run
from apps.training import agents as training_agents
from apps.training.checkpoints import checkpoints_prune, checkpoints_sync, resume_point
from apps.training.models import Checkpoint, JobDataset, LogLine, MetricPoint
from podium import sdk
from tests.conftest import Sent
from tests.monitoring.factories import node_create

pytestmark = pytest.mark.django_db

State = Job.State


@pytest.fixture(autouse=True)
def checkpoint_root(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "checkpoints"
    settings.PODIUM_CHECKPOINT_ROOT = root
    settings.PODIUM = {**settings.PODIUM, "CHECKPOINT_KEEP": 2}
    monkeypatch.delenv("RANK", raising=False)
    return root


def node_in(pool: Pool, name: str, address: str) -> Node:
    node = node_create(name, gpus=4)
    Node.objects.filter(pk=node.pk).update(address=address)
    NodeSchedule.objects.create(node=node, pool=pool)
    return node


def submit(workspace: Workspace, pool: Pool, **fields: Any) -> Job:
    values: dict[str, Any] = {"name": "train", "command": "train.py", "queue_order": 1.0}
    return Job.objects.create(workspace=workspace, pool=pool, **(values | fields))


def start_commands(sent: Sent) -> list[dict[str, Any]]:
    return [c for c in sent.commands() if c["type"] == "job_start"]


def save(root: Path, job: Job, step: int, payload: bytes = b"weights") -> Path:
    saved = sdk.save(step, {"model.bin": payload}, directory=root / f"job-{job.pk}")
    assert saved is not None
    return saved.path


def run_and_requeue(job: Job, committing: Callable[..., Any]) -> None:
    """Start the job's attempt, then lose its node: the job goes back to the queue."""
    job.refresh_from_db()
    allocation = Allocation.objects.get(job=job, attempt=job.attempt)
    committing(agents.on_job_started, allocation.node_id, {"alloc": allocation.pk, "pid": 7})
    message = {"alloc": allocation.pk, "exit_code": None, "reason": "lost: agent restarted"}
    committing(agents.on_job_exited, allocation.node_id, message)


def test_a_torchrun_job_gets_the_rendezvous_of_its_attempt_on_every_node(
    workspace: Workspace, pool: Pool, sent: Sent, committing: Callable[..., Any]
) -> None:
    node_in(pool, "gpu-1", "10.0.0.1")
    node_in(pool, "gpu-2", "10.0.0.2")
    job = submit(
        workspace, pool, kind=Job.Kind.TORCHRUN, nodes=2, gpus_per_node=4, command="train.py -x"
    )

    committing(pass_run)

    starts = sorted(start_commands(sent), key=lambda c: c["rank"])
    assert [s["env"]["NODE_RANK"] for s in starts] == ["0", "1"]
    for start in starts:
        env = start["env"]
        assert env["MASTER_ADDR"] == "10.0.0.1"
        assert env["NNODES"] == "2"
        assert env["NPROC_PER_NODE"] == "4"
        assert env["WORLD_SIZE"] == "8"
        assert env["PODIUM_CHECKPOINT_DIR"].endswith(f"job-{job.pk}")
        assert "PODIUM_RESUME_FROM" not in env
        assert start["command"].startswith("exec python -m torch.distributed.run")
        assert start["command"].endswith(" train.py -x")
    assert starts[0]["env"]["MASTER_PORT"] == starts[1]["env"]["MASTER_PORT"]


def test_a_command_job_runs_its_command_as_the_only_rank_of_each_node(
    workspace: Workspace, pool: Pool, sent: Sent, committing: Callable[..., Any]
) -> None:
    node_in(pool, "gpu-1", "10.0.0.1")
    submit(workspace, pool, command="python train.py")

    committing(pass_run)

    (start,) = start_commands(sent)
    assert start["command"] == "python train.py"
    assert start["env"]["RANK"] == "0"
    assert start["env"]["WORLD_SIZE"] == "1"


def test_a_requeued_job_resumes_from_its_newest_complete_checkpoint(
    workspace: Workspace,
    pool: Pool,
    sent: Sent,
    committing: Callable[..., Any],
    checkpoint_root: Path,
) -> None:
    node_in(pool, "gpu-1", "10.0.0.1")
    job = submit(workspace, pool)
    committing(pass_run)
    save(checkpoint_root, job, 10)
    newest = save(checkpoint_root, job, 20)
    broken = checkpoint_root / f"job-{job.pk}" / "30"
    broken.mkdir()
    (checkpoint_root / f"job-{job.pk}" / ".tmp-40-1-x").mkdir()
    run_and_requeue(job, committing)
    sent.clear()

    committing(pass_run)

    (start,) = start_commands(sent)
    assert start["env"]["PODIUM_RESUME_FROM"] == str(newest)
    assert start["env"]["PODIUM_RESUME_STEP"] == "20"
    job.refresh_from_db()
    events = {e.kind: e for e in job.events.filter(attempt=2)}
    assert events["resume"].data["step"] == 20
    assert "step 30" in events["checkpoint_skipped"].reason
    assert job.launch_env["PODIUM_RESUME_FROM"] == str(newest)


def test_a_corrupted_checkpoint_is_never_offered(
    workspace: Workspace, pool: Pool, checkpoint_root: Path
) -> None:
    job = submit(workspace, pool)
    save(checkpoint_root, job, 10, b"good")
    corrupt = save(checkpoint_root, job, 20, b"good")
    (corrupt / "model.bin").write_bytes(b"evil")

    point = resume_point(job.pk)

    assert point is not None
    assert point.step == 10


def test_without_a_checkpoint_a_requeued_job_starts_over_and_says_so(
    workspace: Workspace, pool: Pool, sent: Sent, committing: Callable[..., Any]
) -> None:
    node_in(pool, "gpu-1", "10.0.0.1")
    job = submit(workspace, pool)
    committing(pass_run)
    run_and_requeue(job, committing)
    sent.clear()

    committing(pass_run)

    (start,) = start_commands(sent)
    assert "PODIUM_RESUME_FROM" not in start["env"]
    assert job.events.filter(kind="restart", attempt=2).exists()


def test_a_job_with_resume_off_never_gets_a_resume_point(
    workspace: Workspace,
    pool: Pool,
    sent: Sent,
    committing: Callable[..., Any],
    checkpoint_root: Path,
) -> None:
    node_in(pool, "gpu-1", "10.0.0.1")
    job = submit(workspace, pool, resume=False)
    committing(pass_run)
    save(checkpoint_root, job, 10)
    run_and_requeue(job, committing)
    sent.clear()

    committing(pass_run)

    (start,) = start_commands(sent)
    assert "PODIUM_RESUME_FROM" not in start["env"]


def test_output_is_stored_once_and_sdk_records_become_metrics_and_checkpoints(
    workspace: Workspace, pool: Pool, sent: Sent, committing: Callable[..., Any]
) -> None:
    node_in(pool, "gpu-1", "10.0.0.1")
    job = submit(workspace, pool)
    committing(pass_run)
    allocation = Allocation.objects.get(job=job)
    report = sdk.marker_format("report", step=5, metrics={"loss": 0.5, "bad": "x"}, ts=None)
    saved = sdk.marker_format(
        "checkpoint", step=5, path="/c/5", size_bytes=10, file_count=1, ts=None
    )
    message = {"alloc": allocation.pk, "seq": 3, "lines": ["step 5", report, saved, "ok"]}

    committing(training_agents.on_job_output, allocation.node_id, message)
    committing(training_agents.on_job_output, allocation.node_id, message)

    lines = list(LogLine.objects.filter(job=job).values_list("seq", "line"))
    assert lines == [(3, "step 5"), (6, "ok")]
    point = MetricPoint.objects.get(job=job)
    assert (point.step, point.values) == (5, {"loss": 0.5})
    checkpoint = Checkpoint.objects.get(job=job)
    assert (checkpoint.step, checkpoint.complete, checkpoint.attempt) == (5, True, 1)
    job.refresh_from_db()
    assert job.last_checkpoint_at is not None


def test_output_of_another_nodes_allocation_is_ignored(
    workspace: Workspace, pool: Pool, committing: Callable[..., Any]
) -> None:
    node_in(pool, "gpu-1", "10.0.0.1")
    other = node_in(pool, "gpu-2", "10.0.0.2")
    job = submit(workspace, pool)
    committing(pass_run)
    allocation = Allocation.objects.get(job=job)
    target = other if allocation.node_id != other.pk else Node.objects.exclude(pk=other.pk).get()

    training_agents.on_job_output(target.pk, {"alloc": allocation.pk, "seq": 0, "lines": ["x"]})

    assert not LogLine.objects.exists()


def test_pruning_keeps_the_newest_checkpoints_and_the_pinned_ones(
    workspace: Workspace, pool: Pool, checkpoint_root: Path
) -> None:
    job = submit(workspace, pool)
    for step in (10, 20, 30, 40):
        save(checkpoint_root, job, step)
    checkpoints_sync(job.pk)
    Checkpoint.objects.filter(job=job, step=10).update(pinned=True)

    removed = checkpoints_prune(job.pk)

    assert removed == [20]
    assert sorted(os.listdir(checkpoint_root / f"job-{job.pk}")) == ["10", "30", "40"]
    assert Checkpoint.objects.get(job=job, step=20).deleted


def test_a_checkpoint_that_cannot_be_written_fails_the_job_with_the_reason() -> None:
    tail = (
        "Traceback (most recent call last):\n"
        "podium.sdk.checkpoints.CheckpointError: checkpoint at step 120 could not be "
        "written to /ckpt: No space left on device\n"
    )

    failure = failure_classify(exit_code=1, signal_number=None, tail=tail)

    assert failure.kind == "checkpoint"
    assert not failure.retry
    assert "No space left on device" in failure.reason


def test_output_of_a_job_without_hang_watchdog_costs_one_read_and_one_insert(
    workspace: Workspace,
    pool: Pool,
    committing: Callable[..., Any],
    django_assert_num_queries: Any,
) -> None:
    node_in(pool, "gpu-1", "10.0.0.1")
    job = submit(workspace, pool)
    committing(pass_run)
    allocation = Allocation.objects.get(job=job)

    with django_assert_num_queries(2):
        training_agents.on_job_output(
            allocation.node_id, {"alloc": allocation.pk, "seq": 0, "lines": ["x", "y"]}
        )

    job.refresh_from_db()
    assert job.last_output_at is None


def test_a_full_or_unwritable_checkpoint_directory_fails_the_job_with_that_reason(
    tmp_path: Path,
) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the checkpoint directory should be")
    script = Path(__file__).resolve().parents[2] / "examples" / "plain" / "train.py"
    env = {**os.environ, "PODIUM_CHECKPOINT_DIR": str(blocked / "job-1")}

    done = subprocess.run(
        [
            sys.executable,
            str(script),
            "--steps",
            "3",
            "--checkpoint-every",
            "2",
            "--step-sleep",
            "0",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    failure = failure_classify(
        exit_code=done.returncode, signal_number=None, tail=done.stdout + done.stderr
    )

    assert done.returncode != 0
    assert failure.kind == "checkpoint"
    assert not failure.retry
    assert "checkpoint at step 2 could not be written" in failure.reason
    assert blocked.read_text().startswith("a file")


def test_a_requeued_job_whose_dataset_was_deleted_says_so_on_its_timeline(
    workspace: Workspace, pool: Pool, sent: Sent, committing: Callable[..., Any]
) -> None:
    node_in(pool, "gpu-1", "10.0.0.1")
    job = submit(workspace, pool)
    JobDataset.objects.create(
        job=job, version=None, ref="corpus@1", env_name="PODIUM_DATASET_CORPUS"
    )
    committing(pass_run)
    run_and_requeue(job, committing)
    sent.clear()

    committing(pass_run)

    (start,) = start_commands(sent)
    assert "PODIUM_DATASET_CORPUS" not in start["env"]
    missing = job.events.get(kind="dataset_missing", attempt=2)
    assert missing.reason == "dataset corpus@1 was deleted: PODIUM_DATASET_CORPUS is not set"


def test_a_worker_verifies_new_checkpoints_and_one_found_corrupt_is_never_offered(
    workspace: Workspace, pool: Pool, checkpoint_root: Path
) -> None:
    job = submit(workspace, pool)
    save(checkpoint_root, job, 10, b"good")
    corrupt = save(checkpoint_root, job, 20, b"good")
    (corrupt / "model.bin").write_bytes(b"evil")

    checkpoints_prune(job.pk)
    checkpoints_sync(job.pk)

    row = Checkpoint.objects.get(job=job, step=20)
    assert (row.complete, row.corrupt) == (False, True)
    assert "model.bin" in row.problem
    assert Checkpoint.objects.get(job=job, step=10).verified_at is not None
    point = resume_point(job.pk)
    assert point is not None
    assert point.step == 10
    assert "step 20" in point.skipped[0]
