"""The training examples as real processes on the CPU: reports, checkpoints, resume, SIGTERM.

Each run gets the environment a Podium job process would: the repository on PYTHONPATH
(so ``podium.sdk`` imports), its own PODIUM_CHECKPOINT_DIR, and PODIUM_RESUME_FROM when
it resumes. The SDK's ``@podium`` marker lines on stdout are what the tests read.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from podium import sdk

ROOT = Path(__file__).resolve().parents[2]
PLAIN = ROOT / "examples" / "plain" / "train.py"
TINY_GPT = ROOT / "examples" / "tiny_gpt" / "train.py"
# A model small enough that each step takes a few milliseconds.
SMALL_GPT = ["--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--block-size", "32"]
SMALL_GPT += ["--batch-size", "8"]
LAUNCH_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def job_env(checkpoints: Path, resume_from: Path | None = None) -> dict[str, str]:
    """This environment without Podium or launcher variables, plus what a job gets."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PODIUM_") and key not in LAUNCH_ENV
    }
    env.update(
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
        PODIUM_CHECKPOINT_DIR=str(checkpoints),
    )
    if resume_from is not None:
        env["PODIUM_RESUME_FROM"] = str(resume_from)
    return env


def run(
    command: list[str], checkpoints: Path, resume_from: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command to its end as a job would; fail the test unless it exits 0."""
    done = subprocess.run(
        command,
        env=job_env(checkpoints, resume_from),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def markers(stdout: str, kind: str) -> list[dict[str, Any]]:
    """The JSON of every ``@podium`` marker line of ``kind``."""
    found = [
        json.loads(line.removeprefix("@podium "))
        for line in stdout.splitlines()
        if line.startswith("@podium ")
    ]
    return [marker for marker in found if marker["kind"] == kind]


def losses(stdout: str) -> dict[int, float]:
    """The reported loss by step, in the order reported (each step at most once)."""
    reports = markers(stdout, "report")
    by_step = {report["step"]: report["metrics"]["loss"] for report in reports}
    assert len(by_step) == len(reports), "a step was reported twice"
    return by_step


def saved_steps(checkpoints: Path) -> list[int]:
    """The steps of the checkpoints in ``checkpoints``, ascending; all must be complete."""
    found = sdk.scan(checkpoints, verify=True)
    assert all(checkpoint.complete for checkpoint in found)
    return sorted(checkpoint.step for checkpoint in found)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(*args: str) -> list[str]:
    """Two CPU workers of the PyTorch example under the torchrun launcher."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    launcher += ["--master-addr", "127.0.0.1", "--master-port", str(free_port())]
    return [*launcher, str(TINY_GPT), *SMALL_GPT, *args]


# The standard-library example ---------------------------------------------------------------


def test_plain_resume_reports_the_next_steps_with_the_same_losses(tmp_path: Path) -> None:
    first = tmp_path / "first"
    plain = [sys.executable, str(PLAIN), "--steps", "30", "--checkpoint-every", "10"]
    plain += ["--step-sleep", "0"]
    whole = run(plain, first)
    assert saved_steps(first) == [10, 20, 30]
    assert "done: 30 steps" in whole.stdout

    resumed = run(plain, tmp_path / "second", resume_from=first / "20")

    assert "resumed from step 20" in resumed.stdout
    assert list(losses(resumed.stdout)) == list(range(21, 31))
    assert losses(resumed.stdout) == {s: v for s, v in losses(whole.stdout).items() if s > 20}
    assert saved_steps(tmp_path / "second") == [30]


def wait_for_checkpoint(checkpoints: Path, process: subprocess.Popen[Any]) -> None:
    """Return once ``process`` has written a complete checkpoint (30 s at most)."""
    deadline = time.monotonic() + 30
    while sdk.latest(checkpoints) is None:
        assert process.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 30 s"
        time.sleep(0.05)


@contextlib.contextmanager
def checkpointed(
    command: list[str], checkpoints: Path, output: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` running as a job would, its stdout into ``output``, once it has written
    its first checkpoint; killed after the block if still running."""
    with output.open("w") as stdout:
        process = subprocess.Popen(command, env=job_env(checkpoints), stdout=stdout)
        try:
            wait_for_checkpoint(checkpoints, process)
            yield process
        finally:
            process.kill()
            process.wait()


def test_plain_sigterm_saves_the_current_step_and_exits_0(tmp_path: Path) -> None:
    checkpoints, output = tmp_path / "checkpoints", tmp_path / "stdout.txt"
    command = [sys.executable, str(PLAIN), "--steps", "10000", "--checkpoint-every", "5"]
    with checkpointed([*command, "--step-sleep", "0.02"], checkpoints, output) as process:
        time.sleep(0.13)  # a few steps past the checkpoint
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0

    text = output.read_text()
    last = max(losses(text))
    assert 5 <= last < 10000
    latest = sdk.latest(checkpoints, verify=True)
    assert latest is not None
    assert latest.step == last
    assert json.loads((latest.path / "state.json").read_text())["step"] == last
    assert f"stopped at step {last} on request" in text
    assert "done:" not in text


# The PyTorch example ------------------------------------------------------------------------


def test_tiny_gpt_trains_and_checkpoints_in_one_process(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    command = [sys.executable, str(TINY_GPT), *SMALL_GPT, "--steps", "20"]

    done = run([*command, "--checkpoint-every", "10"], tmp_path)

    by_step = losses(done.stdout)
    assert list(by_step) == list(range(1, 21))
    assert by_step[20] < by_step[1]
    assert [m["step"] for m in markers(done.stdout, "checkpoint")] == [10, 20]
    assert saved_steps(tmp_path) == [10, 20]
    assert f"done: 20 steps, final loss {by_step[20]:.4f}" in done.stdout
    assert "sample: " in done.stdout


def test_tiny_gpt_two_ranks_checkpoint_on_rank_0_and_resume(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    first, second = tmp_path / "first", tmp_path / "second"

    whole = run(torchrun("--steps", "10", "--checkpoint-every", "5"), first)
    resumed = run(torchrun("--steps", "10", "--checkpoint-every", "5"), second, first / "5")

    assert list(losses(whole.stdout)) == list(range(1, 11))
    assert len(markers(whole.stdout, "checkpoint")) == 2
    assert saved_steps(first) == [5, 10]
    assert "resumed from step 5" in resumed.stdout
    assert losses(resumed.stdout) == {s: v for s, v in losses(whole.stdout).items() if s > 5}
    assert saved_steps(second) == [10]


def test_tiny_gpt_sigterm_to_one_rank_stops_every_rank_after_a_checkpoint(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    checkpoints, output = tmp_path / "checkpoints", tmp_path / "stdout.txt"
    command = torchrun("--steps", "10000", "--checkpoint-every", "3", "--step-sleep", "0.05")
    with checkpointed(command, checkpoints, output) as launcher:
        workers = psutil.Process(launcher.pid).children()
        rank_1 = next(w for w in workers if w.environ().get("RANK") == "1")
        rank_1.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=60) == 0

    text = output.read_text()
    last = max(losses(text))
    latest = sdk.latest(checkpoints, verify=True)
    assert latest is not None
    assert latest.step == last
    assert f"stopped at step {last} on request" in text
