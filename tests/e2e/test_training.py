"""Training end to end: real agents with simulated GPUs run the examples; a node that dies,
a preemption and a job that ignores SIGTERM all end in a resume from the newest complete
checkpoint, and a two-node torchrun job on the CPU finds its peers."""

import contextlib
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from podium import sdk
from tests.e2e.agents import (
    DETECTION,
    FAULT_SETTINGS,
    PASS_INTERVAL,
    Agents,
    nodes_by_name,
    nodes_ready,
    wait_for,
)
from tests.e2e.conftest import Console
from tests.e2e.jobs import job_get, submit
from tests.e2e.training import (
    TINY_GPT,
    attempt_running,
    checkpoints,
    finished,
    kinds_in_order,
    log_text,
    metric_points,
    node_kill,
    plain_command,
    steps_of,
    timeline,
    timeline_text,
    two_node_torchrun_submit,
    wait_step,
)

pytestmark = pytest.mark.e2e

AGENTS = ("train-a", "train-b")
WORKSPACE = "Training"
GRACE = 2.0

# Trains to the step in argv[1], reporting every step and checkpointing every 5, and
# ignores SIGTERM: only a SIGKILL stops it early.
STUBBORN = """\
import signal
import sys
import time

from podium import sdk

signal.signal(signal.SIGTERM, signal.SIG_IGN)
step = 0
if (resume := sdk.resume_from()) is not None:
    step = sdk.validate(resume).step
    print(f"resumed from step {step}", flush=True)
while step < int(sys.argv[1]):
    step += 1
    time.sleep(0.1)
    sdk.report(step, value=float(step))
    if step % 5 == 0:
        sdk.save(step, {"step.txt": str(step).encode()})
print(f"done at step {step}", flush=True)
"""

# Joins the gloo process group torchrun sets up, sums the ranks and says who it is.
RANKS = """\
import os

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
total = torch.tensor([float(dist.get_rank())])
dist.all_reduce(total)
print(
    f"rank={dist.get_rank()} world={dist.get_world_size()} node_rank={os.environ['NODE_RANK']}"
    f" nnodes={os.environ['NNODES']} master={os.environ['MASTER_ADDR']}:"
    f"{os.environ['MASTER_PORT']} rank_sum={total.item():g}",
    flush=True,
)
dist.destroy_process_group()
"""
SMALL_GPT = "--n-layer 1 --n-head 2 --n-embd 32 --block-size 32 --batch-size 8"


@pytest.fixture(scope="module")
def console_settings() -> dict[str, str]:
    return FAULT_SETTINGS


@pytest.fixture
def both_nodes(console: Console, agents: Agents, token: str) -> None:
    """Both agents run and their nodes are ready (an earlier test may have killed one)."""
    for name in AGENTS:
        if name not in agents.procs:
            agents.start(name)
    wait_for(lambda: nodes_ready(console, token, AGENTS), 30, "both nodes ready")


@contextlib.contextmanager
def cordoned(console: Console, token: str, name: str) -> Iterator[None]:
    """The named node takes no new job while the block runs."""
    node_id = nodes_by_name(console, token)[name]["id"]
    status, body = console.api("POST", f"/api/nodes/{node_id}/cordon", token=token, body={})
    assert status == 200, body
    try:
        yield
    finally:
        status, body = console.api("POST", f"/api/nodes/{node_id}/uncordon", token=token)
        assert status == 200, body


def node_lost_after(console: Console, token: str, name: str, since: float) -> float:
    """Seconds from ``since`` until the named node is lost."""
    wait_for(
        lambda: nodes_by_name(console, token)[name]["state"] == "lost",
        DETECTION + 5,
        f"{name} lost",
        interval=0.1,
    )
    return time.time() - since


def resume_reason(console: Console, token: str, job_id: int, attempt: int) -> str:
    """What the timeline says the attempt resumed from."""
    events = timeline(console, token, job_id)
    (line,) = [e for e in events if e["kind"] == "resume" and e["attempt"] == attempt]
    return str(line["reason"])


def test_a_job_on_a_node_that_dies_resumes_on_the_other_from_its_newest_checkpoint(
    console: Console, agents: Agents, token: str, workspace_id: int, both_nodes: None
) -> None:
    steps = 60
    command = plain_command(steps=steps, checkpoint_every=5, step_sleep=0.2)
    command = f'echo "attempt $PODIUM_ATTEMPT on node rank $NODE_RANK"; {command}'
    job = submit(console, token, workspace_id, name="survivor", command=command)
    first = attempt_running(console, token, job["id"], 1, 30)
    directory = Path(first["launch_env"]["PODIUM_CHECKPOINT_DIR"])
    assert "PODIUM_RESUME_FROM" not in first["launch_env"]
    wait_step(console, token, job["id"], attempt=1, step=13, timeout=30)
    (rank,) = first["allocation"]
    victim = rank["node"]
    survivor = next(name for name in AGENTS if name != victim)

    killed_at = time.time()
    node_kill(agents, victim, [rank["pid"]])
    newest = sdk.latest(directory)
    assert newest is not None
    assert newest.step >= 10
    lost_after = node_lost_after(console, token, victim, killed_at)
    moved = attempt_running(console, token, job["id"], 2, DETECTION + 3 * PASS_INTERVAL + 10)
    back_after = time.time() - killed_at
    sys.stderr.write(
        f"\nnode killed: lost after {lost_after:.2f} s, running again on "
        f"{moved['allocation'][0]['node']} after {back_after:.2f} s "
        f"from the checkpoint at step {newest.step}\n"
    )

    assert lost_after <= DETECTION
    assert moved["allocation"][0]["node"] == survivor
    assert moved["launch_env"]["PODIUM_RESUME_FROM"] == str(newest.path)
    assert moved["launch_env"]["PODIUM_RESUME_STEP"] == str(newest.step)
    assert f"step {newest.step}" in resume_reason(console, token, job["id"], 2)
    assert finished(console, token, job["id"], 60)["state"] == "succeeded"
    points = metric_points(console, token, job["id"])
    # What the first attempt reported reached the console in order, up to its last
    # batch before the kill (output on its way when the agent died is lost with it).
    before = steps_of(points, 1)
    assert before == list(range(1, len(before) + 1))
    assert len(before) >= 13
    assert steps_of(points, 2) == list(range(newest.step + 1, steps + 1))
    events = timeline(console, token, job["id"])
    assert kinds_in_order(
        events, "running", "fault", "requeued", "resume", "running", "succeeded"
    ), timeline_text(events)
    fault = next(e for e in events if e["kind"] == "fault")
    assert victim in fault["reason"]
    assert "attempt 1 on node rank 0" in log_text(console, token, job["id"], attempt=1)
    assert f"resumed from step {newest.step}" in log_text(console, token, job["id"], attempt=2)
    assert f"done: {steps} steps" in log_text(console, token, job["id"])
    complete = [c["step"] for c in checkpoints(console, token, job["id"]) if c["complete"]]
    assert complete[0] == steps


def test_a_two_node_torchrun_job_on_the_cpu_finds_its_ranks_over_gloo(
    console: Console,
    agents: Agents,
    token: str,
    workspace_id: int,
    both_nodes: None,
    tmp_path: Path,
) -> None:
    pytest.importorskip("torch")
    script = tmp_path / "ranks.py"
    script.write_text(RANKS)
    job = two_node_torchrun_submit(console, token, workspace_id, name="ranks", command=str(script))

    done = finished(console, token, job["id"], 90)

    assert done["state"] == "succeeded", done["state_reason"]
    env = done["launch_env"]
    assert (env["NNODES"], env["NPROC_PER_NODE"], env["WORLD_SIZE"]) == ("2", "1", "2")
    assert env["MASTER_ADDR"] == "127.0.0.1"
    assert sorted(a["node"] for a in done["allocation"]) == sorted(AGENTS)
    master = f"{env['MASTER_ADDR']}:{env['MASTER_PORT']}"
    for rank in (0, 1):
        output = log_text(console, token, job["id"], rank=rank)
        expected = f"rank={rank} world=2 node_rank={rank} nnodes=2 master={master} rank_sum=1"
        assert expected in output, output


def test_tiny_gpt_trains_across_two_nodes_with_torchrun(
    console: Console, agents: Agents, token: str, workspace_id: int, both_nodes: None
) -> None:
    pytest.importorskip("torch")
    steps = 20
    job = two_node_torchrun_submit(
        console,
        token,
        workspace_id,
        name="tiny-gpt",
        command=f"{TINY_GPT} --steps {steps} --checkpoint-every 10 {SMALL_GPT}",
        env={"OMP_NUM_THREADS": "1"},
    )

    done = finished(console, token, job["id"], 120)

    assert done["state"] == "succeeded", done["state_reason"]
    points = metric_points(console, token, job["id"])
    assert steps_of(points, 1) == list(range(1, steps + 1))
    assert {p["rank"] for p in points} == {0}
    assert all("loss" in p["values"] and "tokens_per_s" in p["values"] for p in points)
    complete = [c["step"] for c in checkpoints(console, token, job["id"]) if c["complete"]]
    assert complete == [steps, 10]


def test_a_preempted_job_checkpoints_on_sigterm_and_resumes_from_that_step(
    console: Console, agents: Agents, token: str, workspace_id: int, both_nodes: None
) -> None:
    steps = 80
    # No checkpoint falls due before the end: the only one in between is SIGTERM's.
    command = plain_command(steps=steps, checkpoint_every=1000, step_sleep=0.1)
    with cordoned(console, token, AGENTS[1]):
        low = submit(
            console,
            token,
            workspace_id,
            name="low",
            command=command,
            priority="low",
            gpus_per_node=8,
        )
        attempt_running(console, token, low["id"], 1, 30)
        wait_step(console, token, low["id"], attempt=1, step=10, timeout=30)
        high = submit(
            console,
            token,
            workspace_id,
            name="high",
            command="sleep 2",
            priority="high",
            gpus_per_node=8,
        )
        assert finished(console, token, high["id"], 60)["state"] == "succeeded"
        resumed = attempt_running(console, token, low["id"], 2, 30)

    saved = [c for c in checkpoints(console, token, low["id"]) if c["attempt"] == 1]
    assert len(saved) == 1, "the first attempt saved no checkpoint on SIGTERM\n" + timeline_text(
        timeline(console, token, low["id"])
    )
    step = saved[0]["step"]
    points = metric_points(console, token, low["id"])
    assert max(steps_of(points, 1)) == step
    assert f"stopped at step {step} on request" in log_text(console, token, low["id"], attempt=1)
    assert resumed["launch_env"]["PODIUM_RESUME_STEP"] == str(step)
    assert f"step {step}" in resume_reason(console, token, low["id"], 2)
    assert finished(console, token, low["id"], 60)["state"] == "succeeded"
    assert steps_of(metric_points(console, token, low["id"]), 2) == list(range(step + 1, steps + 1))
    events = timeline(console, token, low["id"])
    assert kinds_in_order(events, "running", "preempted", "requeued", "resume", "succeeded"), (
        timeline_text(events)
    )
    preempted = next(e for e in events if e["kind"] == "preempted")
    assert str(high["id"]) in preempted["reason"]


def test_a_job_ignoring_sigterm_is_killed_after_its_grace_and_still_resumes(
    console: Console,
    agents: Agents,
    token: str,
    workspace_id: int,
    both_nodes: None,
    tmp_path: Path,
) -> None:
    steps = 70
    script = tmp_path / "stubborn.py"
    script.write_text(STUBBORN)
    job = submit(
        console,
        token,
        workspace_id,
        name="stubborn",
        command=f"python {script} {steps}",
        grace_seconds=GRACE,
        checkpoint_keep=100,
    )
    attempt_running(console, token, job["id"], 1, 30)
    wait_step(console, token, job["id"], attempt=1, step=12, timeout=30)

    status, body = console.api("POST", f"/api/jobs/{job['id']}/requeue", token=token)
    assert status == 200, body
    wait_for(
        lambda: job_get(console, token, job["id"])["attempt"] == 2,
        GRACE + 15,
        "the stubborn job placed again",
    )
    resumed = job_get(console, token, job["id"])
    assert finished(console, token, job["id"], 60)["state"] == "succeeded"

    events = timeline(console, token, job["id"])
    asked, ended = (
        datetime.fromisoformat(e["at"]).timestamp() for e in events if e["kind"] == "requeued"
    )
    sys.stderr.write(f"\nSIGTERM ignored: the attempt ended {ended - asked:.2f} s after it\n")
    assert GRACE <= ended - asked <= GRACE + 3, timeline_text(events)
    points = metric_points(console, token, job["id"])
    last_report = max(
        datetime.fromisoformat(p["at"]).timestamp() for p in points if p["attempt"] == 1
    )
    assert last_report > asked + GRACE / 2, "the attempt stopped at SIGTERM"
    # Every checkpoint of the second attempt was announced; one the first completed but
    # was killed before announcing has no attempt.
    first = [c for c in checkpoints(console, token, job["id"]) if c["attempt"] in (1, None)]
    newest = max((c for c in first if c["complete"]), key=lambda c: c["step"])
    assert resumed["launch_env"]["PODIUM_RESUME_FROM"] == newest["path"]
    assert resumed["launch_env"]["PODIUM_RESUME_STEP"] == str(newest["step"])
    assert steps_of(points, 2) == list(range(newest["step"] + 1, steps + 1))
    assert kinds_in_order(events, "running", "requeued", "requeued", "resume", "succeeded"), (
        timeline_text(events)
    )
    assert f"done at step {steps}" in log_text(console, token, job["id"], attempt=2)
