"""The scheduling pass against the database: placements, agent messages, faults,
watchdogs, preemption and reconciliation."""

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from apps.accounts.models import Workspace
from apps.monitoring.models import Gpu, Health, Node
from apps.scheduler import agents
from apps.scheduler.models import Allocation, Job, NodeSchedule, Pool, Quota
from apps.scheduler.passes import node_failure_record, pass_run
from apps.training import agents as training_agents
from tests.conftest import Sent
from tests.monitoring.factories import node_create

pytestmark = pytest.mark.django_db

State = Job.State


def job_create(workspace: Workspace, pool: Pool, **fields: Any) -> Job:
    values: dict[str, Any] = {
        "name": "train",
        "command": "python train.py",
        "nodes": 1,
        "gpus_per_node": 1,
        "queue_order": time.time(),
        **fields,
    }
    return Job.objects.create(workspace=workspace, pool=pool, **values)


def node_in(pool: Pool, name: str, gpus: int = 4) -> Node:
    node = node_create(name, gpus=gpus)
    NodeSchedule.objects.create(node=node, pool=pool)
    return node


def started(job: Job, committing: Callable[..., Any]) -> None:
    """Every rank of the job reports its process started."""
    job.refresh_from_db()
    for allocation in Allocation.objects.filter(job=job, attempt=job.attempt):
        committing(agents.on_job_started, allocation.node_id, {"alloc": allocation.pk, "pid": 4242})


def exited(
    allocation: Allocation, committing: Callable[..., Any], *, code: int | None = 0, **extra: Any
) -> list[dict[str, Any]]:
    message = {"alloc": allocation.pk, "exit_code": code, **extra}
    return committing(agents.on_job_exited, allocation.node_id, message)


def kinds(job: Job) -> list[str]:
    return list(job.events.order_by("at", "id").values_list("kind", flat=True))


def rank0(job: Job) -> Allocation:
    job.refresh_from_db()
    return Allocation.objects.get(job=job, attempt=job.attempt, rank=0)


def test_a_pass_places_a_job_and_sends_its_start_command(
    workspace: Workspace, pool: Pool, sent: Sent, committing: Callable[..., Any]
) -> None:
    node = node_in(pool, "gpu-1", gpus=4)
    job = job_create(workspace, pool, gpus_per_node=2, env={"LR": "0.1"})

    result = committing(pass_run)

    job.refresh_from_db()
    assert result.placed == 1
    assert job.state == State.STARTING
    assert job.attempt == 1
    allocation = rank0(job)
    assert allocation.node == node
    assert len(allocation.gpus) == 2
    (command,) = sent.commands(node.pk)
    assert command["type"] == "job_start"
    assert command["alloc"] == allocation.pk
    assert command["command"] == "python train.py"
    assert command["gpus"] == allocation.gpus
    assert command["env"]["LR"] == "0.1"
    assert command["env"]["PODIUM_JOB_ID"] == str(job.pk)
    assert command["env"]["PODIUM_ATTEMPT"] == "1"
    assert kinds(job) == ["scheduled", "starting"]


def test_a_job_runs_when_it_starts_and_succeeds_when_it_exits_with_zero(
    workspace: Workspace, pool: Pool, sent: Sent, committing: Callable[..., Any]
) -> None:
    node_in(pool, "gpu-1")
    job = job_create(workspace, pool)
    committing(pass_run)

    started(job, committing)
    job.refresh_from_db()
    assert job.state == State.RUNNING
    replies = exited(rank0(job), committing, code=0)

    job.refresh_from_db()
    assert job.state == State.SUCCEEDED
    assert job.exit_code == 0
    assert job.finished_at is not None
    assert replies == [{"type": "job_ack", "alloc": rank0(job).pk}]
    assert kinds(job)[-2:] == ["running", "succeeded"]


def test_a_failed_attempt_is_retried_until_its_restarts_are_used_up(
    workspace: Workspace, pool: Pool, sent: Sent, committing: Callable[..., Any]
) -> None:
    node_in(pool, "gpu-1")
    job = job_create(workspace, pool, max_restarts=1)
    committing(pass_run)
    started(job, committing)

    exited(rank0(job), committing, code=3, tail="Traceback: boom")
    job.refresh_from_db()
    assert job.state == State.PENDING
    assert job.restarts == 1
    assert "exited with code 3" in job.state_reason

    committing(pass_run)
    started(job, committing)
    exited(rank0(job), committing, code=3)
    job.refresh_from_db()
    assert job.state == State.FAILED
    assert "no restarts left" in job.state_reason
    assert job.attempt == 2


def test_cuda_out_of_memory_fails_at_once(
    workspace: Workspace, pool: Pool, sent: Sent, committing: Callable[..., Any]
) -> None:
    node_in(pool, "gpu-1")
    job = job_create(workspace, pool)
    committing(pass_run)
    started(job, committing)

    exited(rank0(job), committing, code=1, tail="torch.OutOfMemoryError: CUDA out of memory.")

    job.refresh_from_db()
    assert job.state == State.FAILED
    assert job.restarts == 0
    assert "out of memory" in job.state_reason


def test_a_network_error_retries_elsewhere_without_using_a_restart(
    workspace: Workspace, pool: Pool, sent: Sent, committing: Callable[..., Any]
) -> None:
    first = node_in(pool, "gpu-1")
    second = node_in(pool, "gpu-2")
    job = job_create(workspace, pool)
    committing(pass_run)
    started(job, committing)
    placed_on = rank0(job).node_id

    exited(rank0(job), committing, code=1, tail="RuntimeError: NCCL error: unhandled system error")
    committing(pass_run)

    job.refresh_from_db()
    assert job.restarts == 0
    assert job.avoid_nodes == [placed_on]
    assert rank0(job).node_id == ({first.pk, second.pk} - {placed_on}).pop()


def test_a_lost_node_requeues_its_job_which_restarts_on_another_node(
    workspace: Workspace, pool: Pool, sent: Sent, committing: Callable[..., Any]
) -> None:
    node_in(pool, "gpu-1")
    node_in(pool, "gpu-2")
    job = job_create(workspace, pool, max_restarts=0)
    committing(pass_run)
    started(job, committing)
    lost = rank0(job).node
    Node.objects.filter(pk=lost.pk).update(state=Node.State.LOST)

    committing(pass_run)

    job.refresh_from_db()
    first = Allocation.objects.get(job=job, attempt=1)
    assert first.state == Allocation.State.LOST
    assert job.attempt == 2
    assert job.state == State.STARTING
    assert job.restarts == 0
    assert rank0(job).node_id != lost.pk
    timeline = kinds(job)
    assert timeline.index("fault") < timeline.index("requeued") < timeline.index("scheduled", 2)
    fault = job.events.get(kind="fault")
    assert f"node {lost.name} was lost" in fault.reason


def test_a_multi_node_job_with_one_lost_node_is_stopped_everywhere_and_requeued_whole(
    workspace: Workspace, pool: Pool, sent: Sent, committing: Callable[..., Any]
) -> None:
    nodes = [node_in(pool, f"gpu-{i}", gpus=2) for i in range(3)]
    job = job_create(workspace, pool, nodes=2, gpus_per_node=2)
    committing(pass_run)
    started(job, committing)
    ranks = list(Allocation.objects.filter(job=job, attempt=1).order_by("rank"))
    Node.objects.filter(pk=ranks[0].node_id).update(state=Node.State.LOST)
    sent.clear()

    committing(pass_run)

    job.refresh_from_db()
    assert job.state == State.PREEMPTING
    assert sent.commands(ranks[1].node_id) == [
        {"type": "job_signal", "alloc": ranks[1].pk, "signal": "kill", "grace": 0}
    ]
    exited(ranks[1], committing, code=None, signal=9)
    job.refresh_from_db()
    assert job.state == State.PENDING
    committing(pass_run)
    job.refresh_from_db()
    placed = set(Allocation.objects.filter(job=job, attempt=2).values_list("node_id", flat=True))
    assert len(placed) == 2
    assert ranks[0].node_id not in placed
    assert {n.pk for n in nodes} >= placed


def test_an_unhealthy_gpu_leaves_the_pool_and_its_job_restarts_on_other_gpus(
    workspace: Workspace, pool: Pool, sent: Sent, committing: Callable[..., Any]
) -> None:
    node = node_in(pool, "gpu-1", gpus=2)
    job = job_create(workspace, pool)
    committing(pass_run)
    started(job, committing)
    bad = rank0(job).gpus[0]
    Gpu.objects.filter(node=node, index=bad).update(health=Health.UNHEALTHY)
    sent.clear()

    committing(pass_run)

    job.refresh_from_db()
    assert job.state == State.PREEMPTING
    assert f"GPU {bad} of node gpu-1 became unhealthy" in job.state_reason
    exited(rank0(job), committing, code=None, signal=9)
    committing(pass_run)
    assert rank0(job).gpus == [1 - bad]


def test_a_borrower_is_preempted_with_its_grace_when_a_guarantee_waits(
    make_workspace: Callable[..., Workspace],
    pool: Pool,
    sent: Sent,
    committing: Callable[..., Any],
) -> None:
    team_a, team_b = make_workspace("A"), make_workspace("B")
    node_in(pool, "gpu-1", gpus=4)
    Quota.objects.create(workspace=team_a, pool=pool, guaranteed=4, maximum=4)
    Quota.objects.create(workspace=team_b, pool=pool, guaranteed=0, maximum=4)
    borrower = job_create(team_b, pool, gpus_per_node=4, grace_seconds=30)
    committing(pass_run)
    started(borrower, committing)
    owner = job_create(team_a, pool, gpus_per_node=4)
    sent.clear()

    committing(pass_run)

    borrower.refresh_from_db()
    assert borrower.state == State.PREEMPTING
    assert sent.commands() == [
        {"type": "job_signal", "alloc": rank0(borrower).pk, "signal": "term", "grace": 30.0}
    ]
    exited(rank0(borrower), committing, code=None, signal=15)
    borrower.refresh_from_db()
    assert borrower.state == State.PENDING
    assert borrower.restarts == 0
    committing(pass_run)
    owner.refresh_from_db()
    assert owner.state == State.STARTING


def test_cancelling_a_running_job_stops_it_with_its_grace(
    workspace: Workspace, pool: Pool, sent: Sent, committing: Callable[..., Any], member: Any
) -> None:
    from apps.scheduler.services import job_cancel

    node_in(pool, "gpu-1")
    job = job_create(workspace, pool, grace_seconds=5)
    committing(pass_run)
    started(job, committing)
    sent.clear()

    committing(job_cancel, actor=member, job=job)

    job.refresh_from_db()
    assert job.state == State.STOPPING
    assert sent.commands()[0]["signal"] == "term"
    exited(rank0(job), committing, code=None, signal=15)
    job.refresh_from_db()
    assert job.state == State.CANCELLED
    assert job.events.filter(kind="cancelling", actor=member).exists()


def test_a_job_that_does_not_start_in_time_is_requeued(
    workspace: Workspace, pool: Pool, sent: Sent, committing: Callable[..., Any], settings: Any
) -> None:
    node_in(pool, "gpu-1")
    job = job_create(workspace, pool)
    committing(pass_run)
    later = timezone.now() + timedelta(seconds=settings.PODIUM["JOB_START_TIMEOUT"] + 1)
    sent.clear()

    committing(pass_run, later)

    job.refresh_from_db()
    assert job.events.filter(kind="fault", reason__contains="did not start within").exists()
    assert sent.commands()[0]["type"] == "job_signal"


def test_a_job_past_its_maximum_duration_fails(
    workspace: Workspace, pool: Pool, sent: Sent, committing: Callable[..., Any]
) -> None:
    node_in(pool, "gpu-1")
    job = job_create(workspace, pool, max_duration=60)
    committing(pass_run)
    started(job, committing)

    committing(pass_run, timezone.now() + timedelta(seconds=61))
    exited(rank0(job), committing, code=None, signal=15)

    job.refresh_from_db()
    assert job.state == State.FAILED
    assert "maximum duration of 60 s" in job.state_reason


def test_a_silent_job_is_killed_and_requeued_by_the_hang_watchdog(
    workspace: Workspace, pool: Pool, sent: Sent, committing: Callable[..., Any]
) -> None:
    node_in(pool, "gpu-1")
    job = job_create(workspace, pool, hang_timeout=30, max_restarts=2)
    committing(pass_run)
    started(job, committing)
    sent.clear()

    committing(pass_run, timezone.now() + timedelta(seconds=31))

    job.refresh_from_db()
    assert job.state == State.PREEMPTING
    assert job.restarts == 1
    assert "hang watchdog" in job.state_reason
    assert sent.commands()[0]["signal"] == "kill"


def test_output_keeps_the_hang_watchdog_quiet(
    workspace: Workspace, pool: Pool, sent: Sent, committing: Callable[..., Any]
) -> None:
    node_in(pool, "gpu-1")
    job = job_create(workspace, pool, hang_timeout=30)
    committing(pass_run)
    started(job, committing)
    allocation = rank0(job)
    Job.objects.filter(pk=job.pk).update(started_at=timezone.now() - timedelta(seconds=60))

    training_agents.on_job_output(
        allocation.node_id, {"alloc": allocation.pk, "seq": 0, "lines": ["step 1"]}
    )
    committing(pass_run)

    job.refresh_from_db()
    assert job.state == State.RUNNING
    assert (
        f"scheduler.job.{job.pk}",
        {"type": "job.output", "attempt": 1, "rank": 0, "seq": 0, "lines": ["step 1"]},
    ) in sent.messages


def test_a_reconnecting_agent_is_told_what_to_start_and_what_to_kill(
    workspace: Workspace, pool: Pool, sent: Sent, committing: Callable[..., Any]
) -> None:
    node = node_in(pool, "gpu-1", gpus=4)
    waiting = job_create(workspace, pool)
    running = job_create(workspace, pool)
    committing(pass_run)
    started(running, committing)

    replies = committing(agents.on_hello, node.pk, {"jobs": [{"alloc": 999_999, "pid": 7}]})

    by_type = {(r["type"], r["alloc"]) for r in replies}
    assert ("job_start", rank0(waiting).pk) in by_type
    assert ("job_signal", rank0(running).pk) in by_type
    assert ("job_signal", 999_999) in by_type


def test_an_agent_speaks_only_for_its_own_node(
    workspace: Workspace, pool: Pool, sent: Sent, committing: Callable[..., Any]
) -> None:
    node_in(pool, "gpu-1")
    other = node_in(pool, "gpu-2")
    job = job_create(workspace, pool)
    committing(pass_run)
    allocation = rank0(job)
    intruder = other if allocation.node_id != other.pk else Node.objects.get(name="gpu-1")

    committing(agents.on_job_exited, intruder.pk, {"alloc": allocation.pk, "exit_code": 0})

    allocation.refresh_from_db()
    assert allocation.active


def test_a_node_lost_too_often_is_held_out_of_its_pool(
    workspace: Workspace, pool: Pool, sent: Sent, committing: Callable[..., Any], settings: Any
) -> None:
    settings.PODIUM = {**settings.PODIUM, "NODE_FLAP_FAILURES": 3}
    node = node_in(pool, "gpu-1")
    now = timezone.now()

    held = [node_failure_record(node.pk, now + timedelta(seconds=i)) for i in range(3)]
    job = job_create(workspace, pool)
    committing(pass_run)

    assert held == [False, False, True]
    job.refresh_from_db()
    assert job.state == State.PENDING
    assert "lost 3 times" in NodeSchedule.objects.get(node=node).state_reason


def test_a_new_node_joins_the_default_pool_by_itself(
    workspace: Workspace, sent: Sent, committing: Callable[..., Any]
) -> None:
    node = node_create("fresh", gpus=2)
    job = job_create(workspace, Pool.objects.create(name="spare"))

    committing(pass_run)

    schedule = NodeSchedule.objects.get(node=node)
    assert schedule.pool.is_default
    job.refresh_from_db()
    assert job.state == State.PENDING


def test_nvlink_groups_are_worked_out_once_per_connection_of_the_agent(pool: Pool) -> None:
    from apps.scheduler.snapshot import snapshot_load

    node = node_in(pool, "gpu-1", gpus=4)
    gpus = {g.index: g for g in Gpu.objects.filter(node=node)}
    for a, b in ((0, 1), (2, 3)):
        Gpu.objects.filter(pk=gpus[a].pk).update(nvlink_peers=[gpus[b].uuid])
        Gpu.objects.filter(pk=gpus[b].pk).update(nvlink_peers=[gpus[a].uuid])

    (view,) = snapshot_load(timezone.now()).snapshot.nodes
    assert set(view.nvlink_groups) == {frozenset({0, 1}), frozenset({2, 3})}

    Gpu.objects.filter(node=node).update(nvlink_peers=[])
    (cached,) = snapshot_load(timezone.now()).snapshot.nodes
    Node.objects.filter(pk=node.pk).update(connected_at=timezone.now() + timedelta(seconds=1))
    (reconnected,) = snapshot_load(timezone.now()).snapshot.nodes

    assert cached.nvlink_groups == view.nvlink_groups
    assert reconnected.nvlink_groups == ()


def test_a_node_dedicated_to_a_workspace_runs_only_its_jobs(
    make_workspace: Callable[..., Workspace], pool: Pool, sent: Sent, committing: Callable[..., Any]
) -> None:
    owner, other = make_workspace("Owner"), make_workspace("Other")
    dedicated = node_in(pool, "gpu-owned", gpus=8)
    Node.objects.filter(pk=dedicated.pk).update(workspace=owner)
    outsider = job_create(other, pool, gpus_per_node=8)
    insider = job_create(owner, pool, gpus_per_node=8)

    committing(pass_run)

    outsider.refresh_from_db()
    assert outsider.state == State.PENDING
    assert rank0(insider).node_id == dedicated.pk


def test_cpu_and_memory_requests_keep_jobs_off_a_node_without_room(
    workspace: Workspace, pool: Pool, sent: Sent, committing: Callable[..., Any]
) -> None:
    node = node_in(pool, "gpu-1", gpus=4)
    Node.objects.filter(pk=node.pk).update(facts={"cpu_count": 8, "memory_total": 64 * 2**30})
    first = job_create(workspace, pool, cpus=6, memory_mb=16_000)
    second = job_create(workspace, pool, cpus=6)
    third = job_create(workspace, pool, memory_mb=40_000)

    committing(pass_run)

    second.refresh_from_db()
    assert rank0(first).node_id == node.pk
    assert rank0(third).node_id == node.pk
    assert second.state == State.PENDING
    (start, _) = sent.commands(node.pk)
    assert start["env"]["PODIUM_CPUS"] == "6"
    assert start["env"]["OMP_NUM_THREADS"] == "6"
    assert start["env"]["PODIUM_MEMORY_MB"] == "16000"


def test_a_rank_left_over_from_an_earlier_attempt_is_killed(
    workspace: Workspace, pool: Pool, sent: Sent, committing: Callable[..., Any]
) -> None:
    node = node_in(pool, "gpu-1")
    job = job_create(workspace, pool, state=State.PENDING, attempt=2)
    stale = Allocation.objects.create(job=job, attempt=1, rank=0, node=node, gpus=[0])

    committing(pass_run)

    stale.refresh_from_db()
    assert stale.state == Allocation.State.LOST
    assert {"type": "job_signal", "alloc": stale.pk, "signal": "kill", "grace": 0} in sent.commands(
        node.pk
    )
