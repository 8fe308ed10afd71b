"""What an attempt starts with: the command each node runs and its environment.

When a pass places an attempt, ``attempts_prepare`` fixes the attempt's environment once
(every rank must agree on it, and a start sent again after a reconnect must be the same):
the rendezvous of a distributed job (``MASTER_ADDR`` is the address rank 0's agent
connects from, ``MASTER_PORT`` a port derived from the job and attempt), plus what the
layers above add through ``settings.JOB_LAUNCH_HOOKS`` (checkpoint directory, resume
point, dataset paths) and the timeline lines they want recorded. It is kept in
``Job.launch_env``. ``rank_env`` and ``rank_command`` add what differs per node.

A ``torchrun`` job's command is the training script and its arguments; each node runs it
under ``python -m torch.distributed.run`` with the rendezvous of the attempt.

Hooks are dotted paths of ``hook(jobs, ranks) -> {job id: Launch}``, where ``ranks`` maps
each job id to its ``(rank, node id)`` pairs, and of ``hook(job, spec, actor)`` in
``settings.JOB_SUBMIT_HOOKS``, called in the submit's transaction (an ApplicationError
there refuses the submit).
"""

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

from apps.monitoring.models import Node
from apps.scheduler.models import Allocation, Job

# Rendezvous ports: one per job and attempt in a range below Linux's ephemeral ports, so a
# retried attempt never waits for the previous one's port to be released.
PORT_BASE = 20000
PORT_SPAN = 10000
# The variables every job gets from Podium; a job's own env may not set them.
LAUNCH_ENV = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "NODE_RANK",
    "NNODES",
    "NPROC_PER_NODE",
    "WORLD_SIZE",
    "CUDA_VISIBLE_DEVICES",
)


@dataclass
class Launch:
    """What one hook adds to an attempt: variables, and timeline lines ``(kind, reason,
    data)`` recorded when the attempt is placed."""

    env: dict[str, str] = field(default_factory=dict)
    notes: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)


LaunchHook = Callable[[list[Job], dict[int, list[tuple[int, int]]]], dict[int, Launch]]


@cache
def _hooks(setting: str) -> list[Callable[..., Any]]:
    return [import_string(path) for path in getattr(settings, setting, [])]


def submit_hooks_run(job: Job, spec: Any, actor: Any) -> None:
    """Let the layers above take what they need of a submitted job's spec."""
    for hook in _hooks("JOB_SUBMIT_HOOKS"):
        hook(job, spec, actor)


def master_port(job: Job) -> int:
    """The rendezvous port of the job's current attempt."""
    return PORT_BASE + (job.pk * 7919 + job.attempt) % PORT_SPAN


def rendezvous_env(job: Job, master: str) -> dict[str, str]:
    """The variables of a distributed launch that every rank shares."""
    nproc = job.nproc_per_node
    return {
        "MASTER_ADDR": master,
        "MASTER_PORT": str(master_port(job)),
        "NNODES": str(job.nodes),
        "NPROC_PER_NODE": str(nproc),
        "WORLD_SIZE": str(job.nodes * nproc),
    }


def attempts_prepare(
    jobs: list[Job], ranks: dict[int, list[tuple[int, int]]]
) -> dict[int, list[tuple[str, str, dict[str, Any]]]]:
    """Fix the environment of each placed job's attempt in ``job.launch_env`` (saved by the
    caller); return the timeline lines the hooks asked for, by job id."""
    rank0 = {job_id: dict(pairs)[0] for job_id, pairs in ranks.items() if pairs}
    addresses = {
        pk: address or name
        for pk, address, name in Node.objects.filter(pk__in=set(rank0.values())).values_list(
            "pk", "address", "name"
        )
    }
    launches = [hook(jobs, ranks) for hook in _hooks("JOB_LAUNCH_HOOKS")]
    notes: dict[int, list[tuple[str, str, dict[str, Any]]]] = {}
    for job in jobs:
        env = rendezvous_env(job, addresses.get(rank0.get(job.pk, -1)) or "127.0.0.1")
        for launch in launches:
            added = launch.get(job.pk)
            if added is not None:
                env.update(added.env)
                notes.setdefault(job.pk, []).extend(added.notes)
        job.launch_env = env
    return notes


def rank_env(job: Job, allocation: Allocation) -> dict[str, str]:
    """What one node of the attempt gets: its job's env, the attempt's, and its own."""
    env = {
        **{str(k): str(v) for k, v in (job.env or {}).items()},
        **{str(k): str(v) for k, v in (job.launch_env or {}).items()},
        "PODIUM_JOB_ID": str(job.pk),
        "PODIUM_JOB_NAME": job.name,
        "PODIUM_ATTEMPT": str(job.attempt),
        "PODIUM_RANK": str(allocation.rank),
        "PODIUM_NNODES": str(job.nodes),
        "PODIUM_GPUS_PER_NODE": str(job.gpus_per_node),
        "NODE_RANK": str(allocation.rank),
    }
    if job.kind == Job.Kind.COMMAND and job.nproc_per_node == 1:
        # One process per node: it is the node's only rank.
        env["RANK"] = str(allocation.rank)
        env["LOCAL_RANK"] = "0"
    if job.cpus:
        env["PODIUM_CPUS"] = f"{job.cpus:g}"
        env.setdefault("OMP_NUM_THREADS", str(max(1, int(job.cpus // job.nproc_per_node))))
    if job.memory_mb:
        env["PODIUM_MEMORY_MB"] = str(job.memory_mb)
    return env


def rank_command(job: Job) -> str:
    """The shell command every node of the job runs."""
    if job.kind != Job.Kind.TORCHRUN:
        return job.command
    launcher = " ".join(
        [
            "exec python -m torch.distributed.run",
            '--nnodes "$NNODES"',
            '--nproc-per-node "$NPROC_PER_NODE"',
            '--node-rank "$NODE_RANK"',
            '--master-addr "$MASTER_ADDR"',
            '--master-port "$MASTER_PORT"',
            "--max-restarts 0",
        ]
    )
    return f"{launcher} {job.command}"


def torchrun_script_check(command: str) -> str | None:
    """Why a torchrun command cannot be launched, or None: it must name a script."""
    try:
        words = shlex.split(command)
    except ValueError as error:
        return f"command is not valid shell: {error}."
    if not words:
        return "command must name the training script."
    return None
