"""Scheduling engine pass on a large synthetic cluster, checked by an independent verifier.

Builds a snapshot of 1,000 nodes x 8 GPUs (some cordoned, some GPUs out of service, NVLink
topologies of three kinds), about 60% of the GPUs held by running jobs (and again with none
held), 10,000 pending jobs
of 1, 2, 4, 8, 16 (2 x 8) and 64 (8 x 8) GPUs over four priority classes, and quotas for 20
workspaces (guarantees about 80% of the pool, maximums twice the guarantee). Each is run
with GPUs only, and again with CPU and memory: nodes of 128 cores and 1 TB, every rank
asking 4 to 64 cores and 16 to 512 GB (a few ranks asking the most for one GPU). Times
``schedule()`` and checks its decisions without the engine's code: no GPU given twice,
every gang whole on free GPUs of accepting nodes of its pool, no workspace above its
maximum, no node given more cores or memory than it has.
"""

import json
import random
import statistics
import sys
import time
from collections import defaultdict
from typing import Any

from apps.scheduler.engine import (
    PRIORITIES,
    Decisions,
    NodeView,
    PendingJob,
    Quota,
    RunningJob,
    Snapshot,
    schedule,
)

NOW = 1_750_000_000.0
POOL = 1
REPEAT = 5
SHAPES = ((1, 1), (1, 2), (1, 4), (1, 8), (2, 8), (8, 8))  # (nodes, GPUs per node)
SHAPE_WEIGHTS = (30, 20, 20, 15, 10, 5)
PRIORITY_WEIGHTS = {"low": 20, "normal": 60, "high": 15, "urgent": 5}
NODE_CPUS = 128.0
NODE_MEMORY_MB = 1024 * 1024
GB = 1024
# Per rank: cores and GB per GPU, capped; a share of ranks ask for the most whatever their GPUs.
CPUS_PER_GPU = (4, 8, 16)
GB_PER_GPU = (16, 32, 64, 128)
MAX_RANK_CPUS = 64.0
MAX_RANK_GB = 512
HEAVY_SHARE = 0.05


def _rank_needs(rng: random.Random, gpus: int, resources: bool) -> tuple[float, int]:
    """Cores and memory (MB) one rank of ``gpus`` GPUs asks for; none without ``resources``."""
    if not resources:
        return 0.0, 0
    if rng.random() < HEAVY_SHARE:
        return MAX_RANK_CPUS, MAX_RANK_GB * GB
    cpus = min(MAX_RANK_CPUS, float(gpus * rng.choice(CPUS_PER_GPU)))
    return cpus, min(MAX_RANK_GB, gpus * rng.choice(GB_PER_GPU)) * GB


def _nodes(rng: random.Random, count: int, gpus_per_node: int, resources: bool) -> list[NodeView]:
    nodes = []
    half = gpus_per_node // 2
    for i in range(1, count + 1):
        gpus = list(range(gpus_per_node))
        if rng.random() < 0.01:
            gpus.remove(rng.randrange(gpus_per_node))
        kind = i % 4
        if kind in (0, 1):
            groups: tuple[frozenset[int], ...] = (frozenset(range(gpus_per_node)),)
        elif kind == 2:
            groups = (frozenset(range(half)), frozenset(range(half, gpus_per_node)))
        else:
            groups = ()
        nodes.append(
            NodeView(
                id=i,
                name=f"gpu-{i}",
                pool_id=POOL,
                gpus=tuple(gpus),
                nvlink_groups=groups,
                accepting=rng.random() >= 0.01,
                cpus=NODE_CPUS if resources else None,
                memory_mb=NODE_MEMORY_MB if resources else None,
            )
        )
    return nodes


def _quotas(rng: random.Random, workspaces: int, pool_gpus: int) -> list[Quota]:
    shares = [rng.uniform(0.5, 1.5) for _ in range(workspaces)]
    total = sum(shares)
    quotas = []
    for ws, share in enumerate(shares, start=1):
        guaranteed = int(0.8 * pool_gpus * share / total)
        quotas.append(
            Quota(
                workspace_id=ws,
                pool_id=POOL,
                guaranteed=guaranteed,
                maximum=2 * guaranteed,
                weight=float(1 + ws % 3),
            )
        )
    return quotas


def _running(
    rng: random.Random, nodes: list[NodeView], quotas: list[Quota], fill: float, resources: bool
) -> list[RunningJob]:
    free = {node.id: list(node.gpus) for node in nodes}
    cpus_left = {node.id: node.cpus or 0.0 for node in nodes}
    memory_left = {node.id: node.memory_mb or 0 for node in nodes}
    used: dict[int, int] = defaultdict(int)
    maximum = {quota.workspace_id: quota.maximum for quota in quotas}
    target = fill * sum(len(node.gpus) for node in nodes)
    held = 0
    jobs: list[RunningJob] = []
    attempts = 0
    while held < target and attempts < 100_000:
        attempts += 1
        count, per_node = rng.choices(SHAPES[:5], weights=(50, 25, 15, 8, 2))[0]
        ws = rng.randint(1, len(quotas))
        if used[ws] + count * per_node > maximum[ws]:
            continue
        cpus, memory = _rank_needs(rng, per_node, resources)
        hosts = [
            node
            for node in rng.sample(nodes, 8)
            if len(free[node.id]) >= per_node
            and (not resources or (cpus_left[node.id] >= cpus and memory_left[node.id] >= memory))
        ]
        if len(hosts) < count:
            continue
        slots = []
        for node in hosts[:count]:
            gpus = tuple(sorted(free[node.id][:per_node]))
            del free[node.id][:per_node]
            cpus_left[node.id] -= cpus
            memory_left[node.id] -= memory
            slots.append((node.id, gpus))
        started = NOW - rng.uniform(60, 86_400)
        jobs.append(
            RunningJob(
                id=len(jobs) + 1,
                workspace_id=ws,
                pool_id=POOL,
                priority=rng.choice((0, 1, 1, 1, 2)),
                slots=tuple(slots),
                started_at=started,
                last_checkpoint_at=started + rng.uniform(0, NOW - started)
                if rng.random() < 0.5
                else None,
                ends_by=NOW + rng.uniform(60, 86_400) if rng.random() < 0.7 else None,
                preemptible=rng.random() >= 0.01,
                cpus=cpus,
                memory_mb=memory,
            )
        )
        used[ws] += count * per_node
        held += count * per_node
    return jobs


def synthetic_snapshot(
    nodes: int = 1000,
    gpus_per_node: int = 8,
    pending: int = 10000,
    workspaces: int = 20,
    seed: int = 0,
    running_fill: float = 0.6,
    resources: bool = False,
) -> Snapshot:
    """A large, reproducible snapshot of one pool (see the module docstring).

    ``running_fill`` is the share of GPUs held by running jobs; with ``resources``, nodes
    offer CPU cores and memory and every rank asks for some.
    """
    rng = random.Random(seed)  # noqa: S311 (reproducible test data, not a secret)
    views = _nodes(rng, nodes, gpus_per_node, resources)
    quotas = _quotas(rng, workspaces, sum(len(view.gpus) for view in views))
    running = _running(rng, views, quotas, running_fill, resources)
    shapes = [(count, min(per_node, gpus_per_node)) for count, per_node in SHAPES if count <= nodes]
    names = list(PRIORITY_WEIGHTS)
    queue = []
    for i in range(pending):
        count, per_node = rng.choices(shapes, weights=SHAPE_WEIGHTS[: len(shapes)])[0]
        priority = rng.choices(names, weights=list(PRIORITY_WEIGHTS.values()))[0]
        cpus, memory = _rank_needs(rng, per_node, resources)
        queue.append(
            PendingJob(
                id=100_000 + i,
                workspace_id=rng.randint(1, workspaces),
                pool_id=POOL,
                priority=PRIORITIES[priority],
                nodes=count,
                gpus_per_node=per_node,
                order=NOW - rng.uniform(0, 7 * 86_400),
                max_duration=rng.uniform(600, 86_400) if rng.random() < 0.5 else None,
                avoid_nodes=frozenset({rng.randint(1, nodes)})
                if rng.random() < 0.01
                else frozenset(),
                cpus=cpus,
                memory_mb=memory,
            )
        )
    return Snapshot(
        now=NOW,
        nodes=tuple(views),
        running=tuple(running),
        pending=tuple(queue),
        quotas=tuple(quotas),
    )


def verify(snapshot: Snapshot, decisions: Decisions) -> dict[str, int]:
    """Count rule violations in ``decisions``, from the snapshot alone."""
    nodes = {node.id: node for node in snapshot.nodes}
    jobs = {job.id: job for job in snapshot.pending}
    taken: set[tuple[int, int]] = set()
    used: dict[tuple[int, int], int] = defaultdict(int)
    cpus_held: dict[int, float] = defaultdict(float)
    memory_held: dict[int, int] = defaultdict(int)
    for holder in snapshot.running:
        taken.update((node_id, gpu) for node_id, gpus in holder.slots for gpu in gpus)
        used[holder.workspace_id, holder.pool_id] += holder.gpus
        for node_id, _ in holder.slots:
            cpus_held[node_id] += holder.cpus
            memory_held[node_id] += holder.memory_mb
    cpus_placed: dict[int, float] = defaultdict(float)
    memory_placed: dict[int, int] = defaultdict(int)
    maximum = {(q.workspace_id, q.pool_id): q.maximum for q in snapshot.quotas}
    pool_size: dict[int, int] = defaultdict(int)
    for node in snapshot.nodes:
        pool_size[node.pool_id] += len(node.gpus)
    double = gang = placed_where = 0
    placed_by: dict[tuple[int, int], int] = defaultdict(int)
    for placement in decisions.placements:
        job = jobs[placement.job_id]
        hosts = [node_id for node_id, _ in placement.slots]
        if len(hosts) != job.nodes or len(set(hosts)) != job.nodes:
            gang += 1
        for node_id, gpus in placement.slots:
            view = nodes.get(node_id)
            if len(set(gpus)) != job.gpus_per_node or len(gpus) != job.gpus_per_node:
                gang += 1
            if (
                view is None
                or view.pool_id != job.pool_id
                or not view.accepting
                or node_id in job.avoid_nodes
                or not set(gpus) <= set(view.gpus)
            ):
                placed_where += 1
            for gpu in gpus:
                if (node_id, gpu) in taken:
                    double += 1
                taken.add((node_id, gpu))
            if view is not None:
                cpus_placed[node_id] += job.cpus
                memory_placed[node_id] += job.memory_mb
        placed_by[job.workspace_id, job.pool_id] += job.gpus
    cpu_over = sum(
        1
        for node_id, cpus in cpus_placed.items()
        if cpus > 0
        and (cpus_limit := nodes[node_id].cpus) is not None
        and cpus_held[node_id] + cpus > cpus_limit
    )
    memory_over = sum(
        1
        for node_id, memory in memory_placed.items()
        if memory > 0
        and (memory_limit := nodes[node_id].memory_mb) is not None
        and memory_held[node_id] + memory > memory_limit
    )
    quota = sum(
        1
        for key, gpus in placed_by.items()
        if used[key] + gpus > maximum.get(key, pool_size[key[1]])
    )
    decided = [p.job_id for p in decisions.placements] + [r.job_id for r in decisions.pending]
    unaccounted = len(set(jobs) ^ set(decided)) + len(decided) - len(set(decided))
    return {
        "double_allocated_gpus": double,
        "gang_violations": gang,
        "placed_outside_free_accepting_nodes": placed_where,
        "quota_violations": quota,
        "nodes_over_cpu": cpu_over,
        "nodes_over_memory": memory_over,
        "pending_jobs_unaccounted": unaccounted,
    }


def measure(snapshot: Snapshot, repeat: int = REPEAT) -> dict[str, Any]:
    """Time ``schedule(snapshot)`` ``repeat`` times; what the last pass decided, verified."""
    timings = []
    decisions = schedule(snapshot)
    for _ in range(repeat):
        started = time.perf_counter()
        decisions = schedule(snapshot)
        timings.append(time.perf_counter() - started)
    violations = verify(snapshot, decisions)
    total = sum(len(node.gpus) for node in snapshot.nodes)
    schedulable = {(node.id, gpu) for node in snapshot.nodes for gpu in node.gpus}
    held = sum(
        1
        for job in snapshot.running
        for node_id, gpus in job.slots
        for gpu in gpus
        if (node_id, gpu) in schedulable
    )
    placed = sum(len(gpus) for p in decisions.placements for _, gpus in p.slots)
    return {
        "nodes": len(snapshot.nodes),
        "gpus": total,
        "running_jobs": len(snapshot.running),
        "pending_jobs": len(snapshot.pending),
        "workspaces": len(snapshot.quotas),
        "pass_seconds": {
            "min": round(min(timings), 4),
            "median": round(statistics.median(timings), 4),
            "max": round(max(timings), 4),
        },
        "placements": len(decisions.placements),
        "gpus_placed": placed,
        "preemptions": len(decisions.preemptions),
        "still_pending": len(decisions.pending),
        "reserved_jobs": sum(1 for r in decisions.pending if r.reserved),
        "utilisation_before": round(held / total, 4),
        "utilisation_after": round((held + placed) / total, 4),
        "violations": violations,
    }


def run() -> dict[str, Any]:
    """The pass on a busy cluster (60% of GPUs held) and on an idle one, with GPUs only and
    with CPU and memory, all verified."""
    results = {
        "busy": measure(synthetic_snapshot()),
        "idle": measure(synthetic_snapshot(running_fill=0.0)),
        "busy_resources": measure(synthetic_snapshot(resources=True)),
        "idle_resources": measure(synthetic_snapshot(running_fill=0.0, resources=True)),
    }
    summary: dict[str, Any] = {
        f"pass_seconds_{case}": result["pass_seconds"]["median"] for case, result in results.items()
    }
    summary.update((f"placements_{case}", result["placements"]) for case, result in results.items())
    summary.update(
        (f"utilisation_{case}", result["utilisation_after"]) for case, result in results.items()
    )
    summary["violations"] = sum(sum(r["violations"].values()) for r in results.values())
    return {
        "description": __doc__.strip().splitlines()[0],
        "results": results,
        "summary": summary,
    }


def main() -> int:
    """Print the benchmark's results as JSON; exit 1 if the verifier found a violation."""
    result = run()
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 1 if result["summary"]["violations"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
