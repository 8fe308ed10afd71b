"""Training recovery: node failures injected into a running training job, and the effective
training time ratio (ETTR) of a soak with a failure every few minutes.

Starts ``podium up`` on a fresh data directory (embedded SQLite and Redis, no local agent)
with the e2e tests' fault timings (a node is suspect after 3 s of silence, lost after 5 s;
a scheduling pass every second; the hold of flapping nodes off, since the same nodes are
killed again and again on purpose), and joins three agents of one simulated GPU each.
The job is the plain example (``examples/plain/train.py``) on one GPU: a fixed step time
(``STEP_SLEEP``) and a checkpoint every ``CHECKPOINT_EVERY`` steps.

A fault SIGKILLs the agent of the node running the job and the job's process group, as a
power cut would; once the node is lost and the job runs elsewhere, the agent is started
again so the capacity returns.

1. Faults: ``FAULTS`` faults, each after the attempt has trained for a random while (so
   that the kill falls anywhere between two checkpoints). Per fault: detection (kill to
   node lost, as the API shows it, polled every 0.1 s), back to training (kill to the
   first metrics point of the next attempt, stamped by the job), steps lost (the last step
   the killed attempt printed, read from the agent's log of it, minus the step the next
   attempt resumed from).
2. Soak: ``SOAK_SECONDS`` of training with a fault every ``FAULT_EVERY`` seconds, with
   resume, then the same with ``"resume": false`` (every attempt starts from scratch) as
   the baseline. ETTR = steps that count at the end (the progress of the last attempt) x
   the uninterrupted step time (from the attempts' own reports) / the soak's wall time.

``python -m bench.recovery --soak-seconds 120 --fault-every 40`` runs a short soak;
``BENCH_RECOVERY_SOAK_SECONDS`` and ``BENCH_RECOVERY_FAULT_EVERY`` do the same for
``python -m bench recovery``.
"""

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import psutil

from bench.startup import console_down, console_up
from bench.telemetry import _api
from podium.sdk import marker_parse

ROOT = Path(__file__).resolve().parents[1]
PLAIN = ROOT / "examples" / "plain" / "train.py"
ADMIN_PASSWORD = "bench-Password-1"
SUSPECT_AFTER = 3.0
LOST_AFTER = 5.0
SCHEDULER_INTERVAL = 1.0
CONSOLE_SETTINGS = {
    "PODIUM_NODE_SUSPECT_AFTER": f"{SUSPECT_AFTER:g}",
    "PODIUM_NODE_LOST_AFTER": f"{LOST_AFTER:g}",
    "PODIUM_SCHEDULER_INTERVAL": f"{SCHEDULER_INTERVAL:g}",
    "PODIUM_NODE_FLAP_FAILURES": "0",
}
AGENTS = ("rec-1", "rec-2", "rec-3")
STEP_SLEEP = 0.1
CHECKPOINT_EVERY = 20
FAULTS = 6
TRAIN_BEFORE_FAULT = (5.0, 12.0)  # seconds an attempt trains before its node is killed
SEED = 5
SOAK_SECONDS = float(os.environ.get("BENCH_RECOVERY_SOAK_SECONDS", "600"))
FAULT_EVERY = float(os.environ.get("BENCH_RECOVERY_FAULT_EVERY", "120"))
TARGETS = {
    "detection_s": 6.0,
    "back_to_training_s": 20.0,
    "steps_lost": CHECKPOINT_EVERY,
    "ettr": 0.90,
}
WAIT_TIMEOUT = 60.0

T = TypeVar("T")


def _say(message: str) -> None:
    sys.stderr.write(f"[recovery] {message}\n")
    sys.stderr.flush()


def _wait(condition: Callable[[], T | None], what: str, timeout: float = WAIT_TIMEOUT) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not happen within {timeout:g} s")


@contextlib.contextmanager
def _environment(extra: dict[str, str]) -> Iterator[None]:
    """``extra`` in this process's environment (which ``console_up`` passes on) meanwhile."""
    saved = {key: os.environ.get(key) for key in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class Cluster:
    """A console, its admin token, a workspace and the agents joined to it."""

    base: str
    root: Path
    token: str = ""
    workspace_id: int = 0
    join_token: str = ""
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """The decoded JSON answer, with the admin token once there is one."""
        return _api(self.base, method, path, self.token or None, body)

    def state_dir(self, name: str) -> Path:
        return self.root / "agents" / name

    def agent_start(self, name: str) -> None:
        argv = [sys.executable, "-m", "podium.agent", "--server", self.base, "--name", name]
        argv += ["--state-dir", str(self.state_dir(name)), "--simulate-gpus", "1"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PODIUM_")}
        env["PODIUM_AGENT_TOKEN"] = self.join_token
        self.state_dir(name).mkdir(parents=True, exist_ok=True)
        with (self.root / f"{name}.log").open("ab") as log:
            self.agents[name] = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def node_states(self) -> dict[str, str]:
        nodes = self.api("GET", "/api/nodes?limit=500")["items"]
        return {node["name"]: node["state"] for node in nodes}

    def ready(self, *names: str) -> bool:
        states = self.node_states()
        return all(states.get(name) == "ready" for name in names)

    def node_kill(self, name: str, job_pid: int) -> None:
        """SIGKILL the node's agent and the job's process group, and wait until they are gone."""
        procs = []
        with contextlib.suppress(psutil.NoSuchProcess):
            leader = psutil.Process(job_pid)
            procs = [leader, *leader.children(recursive=True)]
        agent = self.agents.pop(name)
        agent.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job_pid, signal.SIGKILL)
        agent.wait(timeout=10)
        psutil.wait_procs(procs, timeout=10)

    def stop(self) -> None:
        for agent in self.agents.values():
            agent.send_signal(signal.SIGTERM)
        for agent in self.agents.values():
            try:
                agent.wait(timeout=15)
            except subprocess.TimeoutExpired:
                agent.kill()
        self.agents.clear()

    def job(self, job_id: int) -> dict[str, Any]:
        return dict(self.api("GET", f"/api/jobs/{job_id}"))

    def running(self, job_id: int, attempt: int) -> dict[str, Any] | None:
        """The job while the given attempt (or a later one) runs with every rank started."""
        job = self.job(job_id)
        if (
            job["attempt"] >= attempt
            and job["state"] == "running"
            and all(a["state"] == "running" for a in job["allocation"])
        ):
            return job
        return None

    def submit(self, *, name: str, steps: int, resume: bool) -> dict[str, Any]:
        command = (
            f"python {PLAIN} --steps {steps} --checkpoint-every {CHECKPOINT_EVERY} "
            f"--step-sleep {STEP_SLEEP:g}"
        )
        body = {
            "workspace_id": self.workspace_id,
            "name": name,
            "command": command,
            "resume": resume,
            "max_restarts": 0,
        }
        return dict(self.api("POST", "/api/jobs", body))


@dataclass
class Trace:
    """The metrics points of one job, read incrementally."""

    cluster: Cluster
    job_id: int
    cursor: int = 0
    points: list[dict[str, Any]] = field(default_factory=list)

    def read(self) -> list[dict[str, Any]]:
        while True:
            body = self.cluster.api("GET", f"/api/jobs/{self.job_id}/metrics?after={self.cursor}")
            if not body["points"]:
                return self.points
            for point in body["points"]:
                point["ts"] = datetime.fromisoformat(point["at"]).timestamp()
            self.points += body["points"]
            self.cursor = body["cursor"]

    def of(self, attempt: int) -> list[dict[str, Any]]:
        return [p for p in self.read() if p["attempt"] == attempt]


def printed_last_step(cluster: Cluster, name: str) -> int | None:
    """The last step the job on this node printed a report of, from the agent's log of its
    newest allocation (written as the output arrives, so it has what the console missed)."""
    logs = sorted((cluster.state_dir(name) / "jobs").glob("*.log"), key=lambda p: p.stat().st_mtime)
    if not logs:
        return None
    steps = [
        record["step"]
        for line in logs[-1].read_text(errors="replace").splitlines()
        if (record := marker_parse(line)) is not None and record.get("kind") == "report"
    ]
    return max(steps, default=None)


def resume_step(job: dict[str, Any]) -> int:
    """The step the job's current attempt resumed from (0: from the beginning)."""
    return int(job["launch_env"].get("PODIUM_RESUME_STEP", 0))


def fault_inject(cluster: Cluster, trace: Trace, job: dict[str, Any]) -> dict[str, Any]:
    """Kill the node running the job; measure until the next attempt trains; restart the
    node's agent."""
    (rank,) = job["allocation"]
    victim, attempt = rank["node"], job["attempt"]
    killed_at = time.time()
    cluster.node_kill(victim, rank["pid"])
    _wait(lambda: cluster.node_states().get(victim) == "lost", f"{victim} lost")
    detection = time.time() - killed_at
    moved = _wait(lambda: cluster.running(job["id"], attempt + 1), "the job running again")
    first = _wait(lambda: trace.of(moved["attempt"]), "a report of the next attempt")
    back = min(p["ts"] for p in first) - killed_at
    printed = printed_last_step(cluster, victim)
    reported = max((p["step"] for p in trace.of(attempt)), default=0)
    last = max(printed or 0, reported)
    cluster.agent_start(victim)
    resumed = resume_step(moved)
    return {
        "node": victim,
        "attempt": attempt,
        "detection_s": round(detection, 2),
        "back_to_training_s": round(back, 2),
        "last_step": last,
        "last_step_at_console": reported,
        "resumed_from": resumed,
        "steps_lost": last - resumed,
    }


def _p50_max(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 2), "max": round(max(values), 2)}


def spread(faults: list[dict[str, Any]], resumed: list[dict[str, Any]]) -> dict[str, Any]:
    """p50 and max of detection and back to training over ``faults``, and of the steps lost
    over ``resumed`` (faults followed by a resume)."""
    return {
        "detection_s": _p50_max([f["detection_s"] for f in faults]),
        "back_to_training_s": _p50_max([f["back_to_training_s"] for f in faults]),
        "steps_lost": _p50_max([f["steps_lost"] for f in resumed]),
    }


def attempt_training(
    cluster: Cluster, trace: Trace, job_id: int, attempt: int
) -> tuple[dict[str, Any], float]:
    """Wait until the attempt runs and reports; the job then and its first report's time."""
    running = _wait(lambda: cluster.running(job_id, attempt), "the job running")
    first = _wait(lambda: trace.of(running["attempt"]), "a first report")
    return running, min(p["ts"] for p in first)


def faults_measure(cluster: Cluster, count: int) -> dict[str, Any]:
    """``count`` faults of one job, each after a random while of training."""
    rng = random.Random(SEED)  # noqa: S311 -- reproducible, not secret
    steps = int(count * 2 * TRAIN_BEFORE_FAULT[1] / STEP_SLEEP) + 1000
    job = cluster.submit(name="faults", steps=steps, resume=True)
    trace = Trace(cluster, job["id"])
    faults = []
    for n in range(count):
        running, first = attempt_training(cluster, trace, job["id"], n + 1)
        time.sleep(max(0.0, first + rng.uniform(*TRAIN_BEFORE_FAULT) - time.time()))
        fault = fault_inject(cluster, trace, running)
        faults.append(fault)
        _say(
            f"fault {n + 1}: {fault['node']} lost after {fault['detection_s']} s, training "
            f"again after {fault['back_to_training_s']} s, {fault['steps_lost']} steps lost "
            f"(step {fault['last_step']} -> {fault['resumed_from']})"
        )
        _wait(lambda: cluster.ready(*AGENTS), "every node ready again")
    cluster.api("POST", f"/api/jobs/{job['id']}/cancel")
    return {"faults": faults, **spread(faults, faults)}


def step_time(points: list[dict[str, Any]]) -> float:
    """Seconds per step of uninterrupted training: each attempt's steps over its time."""
    steps = seconds = 0.0
    for attempt in {p["attempt"] for p in points}:
        mine = sorted((p for p in points if p["attempt"] == attempt), key=lambda p: p["step"])
        if len(mine) >= 2:
            steps += mine[-1]["step"] - mine[0]["step"]
            seconds += mine[-1]["ts"] - mine[0]["ts"]
    return seconds / steps if steps else STEP_SLEEP


def soak_measure(
    cluster: Cluster, *, resume: bool, seconds: float, fault_every: float
) -> dict[str, Any]:
    """Train for ``seconds`` with a fault every ``fault_every`` seconds; the ETTR."""
    job = cluster.submit(
        name="soak" if resume else "soak-from-scratch",
        steps=int(3 * seconds / STEP_SLEEP),
        resume=resume,
    )
    trace = Trace(cluster, job["id"])
    _wait(lambda: cluster.running(job["id"], 1), "the soak job running")
    started = time.time()
    ends = started + seconds
    faults = []
    due = started + fault_every
    while due < ends:
        time.sleep(max(0.0, due - time.time()))
        current = _wait(lambda: cluster.running(job["id"], 1), "the soak job running")
        faults.append(fault_inject(cluster, trace, current))
        _say(f"soak ({'resume' if resume else 'from scratch'}): fault {len(faults)} done")
        due += fault_every
    time.sleep(max(0.0, ends - time.time()) + 2 * SCHEDULER_INTERVAL)
    points = [p for p in trace.read() if p["ts"] <= ends]
    final = cluster.job(job["id"])
    last_attempt = max(p["attempt"] for p in points)
    if final["attempt"] > last_attempt:
        progress = resume_step(final) if resume else 0
    else:
        progress = max(p["step"] for p in points if p["attempt"] == last_attempt)
    per_step = step_time(points)
    goodput = cluster.api("GET", f"/api/jobs/{job['id']}/goodput")
    cluster.api("POST", f"/api/jobs/{job['id']}/cancel")
    return {
        "resume": resume,
        "seconds": seconds,
        "fault_every_s": fault_every,
        "faults": len(faults),
        "steps_that_count": progress,
        "steps_reported": len(points),
        "step_time_s": round(per_step, 4),
        "ettr": round(progress * per_step / seconds, 4),
        "console_goodput_ratio": goodput["ratio"],
        "per_fault": faults,
    }


def cluster_up(root: Path) -> tuple[subprocess.Popen[bytes], Cluster]:
    """The console with the fault timings, a workspace, and every agent ready."""
    with _environment(CONSOLE_SETTINGS):
        console, port = console_up(root / "data", ADMIN_PASSWORD)
    cluster = Cluster(base=f"http://127.0.0.1:{port}", root=root)
    try:
        cluster.token = cluster.api(
            "POST", "/api/auth/token", {"username": "admin", "password": ADMIN_PASSWORD}
        )["token"]
        cluster.workspace_id = cluster.api("POST", "/api/workspaces", {"name": "recovery"})["id"]
        join = cluster.api("POST", "/api/join-tokens", {"name": "recovery", "max_uses": 100})
        cluster.join_token = join["token"]
        for name in AGENTS:
            cluster.agent_start(name)
        _wait(lambda: cluster.ready(*AGENTS), "every node ready")
    except BaseException:
        cluster.stop()
        console_down(console)
        raise
    return console, cluster


def every_fault(
    faults: dict[str, Any], soak: dict[str, Any], scratch: dict[str, Any]
) -> dict[str, Any]:
    """The spread over every fault of the run, the soaks' included."""
    resumed = faults["faults"] + soak["per_fault"]
    every = resumed + scratch["per_fault"]
    return {"faults": len(every), **spread(every, resumed)}


def table(result: dict[str, Any]) -> str:
    """The figures against the targets, as a text table (the last column: the worst over
    every fault of the run, the soaks' included)."""
    faults = result["results"]["faults"]
    every = result["results"]["every_fault"]
    rows = [
        ("detection (kill -> node lost)", "detection_s", "s"),
        ("back to training", "back_to_training_s", "s"),
        ("steps lost", "steps_lost", "steps"),
    ]
    lines = [f"{'measure':30} {'p50':>6} {'max':>6} {'max, all':>9}  target"]
    for label, key, unit in rows:
        lines.append(
            f"{label:30} {faults[key]['p50']:>6g} {faults[key]['max']:>6g} "
            f"{every[key]['max']:>9g}  <= {TARGETS[key]:g} {unit}"
        )
    soak = result["results"]["soak_resume"]["ettr"]
    scratch = result["results"]["soak_from_scratch"]["ettr"]
    lines.append(f"{'ETTR with resume':30} {soak:>23.1%}  >= {TARGETS['ettr']:.0%}")
    lines.append(f"{'ETTR from scratch (baseline)':30} {scratch:>23.1%}")
    return "\n".join(lines)


def run(soak_seconds: float = SOAK_SECONDS, fault_every: float = FAULT_EVERY) -> dict[str, Any]:
    """Both measures; the summary holds the figures the issue asks for."""
    root = Path(tempfile.mkdtemp(prefix="podium-bench-recovery-"))
    console, cluster = cluster_up(root)
    try:
        _say(f"{FAULTS} faults, a checkpoint every {CHECKPOINT_EVERY} steps of {STEP_SLEEP} s")
        faults = faults_measure(cluster, FAULTS)
        _say(f"soak with resume: {soak_seconds:g} s, a fault every {fault_every:g} s")
        soak = soak_measure(cluster, resume=True, seconds=soak_seconds, fault_every=fault_every)
        _say("the same soak from scratch (resume off)")
        scratch = soak_measure(cluster, resume=False, seconds=soak_seconds, fault_every=fault_every)
    finally:
        cluster.stop()
        console_down(console)
    shutil.rmtree(root, ignore_errors=True)
    every = every_fault(faults, soak, scratch)
    summary = {
        "detection_p50_s": faults["detection_s"]["p50"],
        "detection_max_s": faults["detection_s"]["max"],
        "back_to_training_p50_s": faults["back_to_training_s"]["p50"],
        "back_to_training_max_s": faults["back_to_training_s"]["max"],
        "steps_lost_p50": faults["steps_lost"]["p50"],
        "steps_lost_max": faults["steps_lost"]["max"],
        "checkpoint_every_steps": CHECKPOINT_EVERY,
        "ettr_resume": soak["ettr"],
        "ettr_from_scratch": scratch["ettr"],
        "faults_in_all": every["faults"],
        "detection_max_every_fault_s": every["detection_s"]["max"],
        "back_to_training_max_every_fault_s": every["back_to_training_s"]["max"],
        "steps_lost_max_every_resume": every["steps_lost"]["max"],
    }
    summary["targets_met"] = (
        every["detection_s"]["max"] <= TARGETS["detection_s"]
        and every["back_to_training_s"]["max"] <= TARGETS["back_to_training_s"]
        and every["steps_lost"]["max"] <= TARGETS["steps_lost"]
        and soak["ettr"] >= TARGETS["ettr"]
    )
    result = {
        "description": __doc__.strip().splitlines()[0],
        "settings": {
            "node_suspect_after_s": SUSPECT_AFTER,
            "node_lost_after_s": LOST_AFTER,
            "scheduler_interval_s": SCHEDULER_INTERVAL,
            "agents": len(AGENTS),
            "step_sleep_s": STEP_SLEEP,
            "checkpoint_every_steps": CHECKPOINT_EVERY,
            "faults": FAULTS,
            "soak_seconds": soak_seconds,
            "fault_every_s": fault_every,
        },
        "targets": TARGETS,
        "results": {
            "faults": faults,
            "soak_resume": soak,
            "soak_from_scratch": scratch,
            "every_fault": every,
        },
        "summary": summary,
    }
    _say("\n" + table(result))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recovery", description=__doc__)
    parser.add_argument("--soak-seconds", type=float, default=SOAK_SECONDS)
    parser.add_argument("--fault-every", type=float, default=FAULT_EVERY)
    parser.add_argument("--output", type=Path, help="also write the JSON result here")
    args = parser.parse_args()
    result = run(args.soak_seconds, args.fault_every)
    text = json.dumps(result, indent=2) + "\n"
    if args.output:
        args.output.write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
