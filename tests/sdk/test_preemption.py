"""SIGTERM as a request to stop: the training loop notices it, saves a checkpoint, and
exits 0; the next attempt resumes from that checkpoint."""

import signal
import threading
from pathlib import Path

from podium import sdk
from tests.sdk.conftest import sdk_run, sdk_start

TRAINING_LOOP = """
import sys, time
from podium import sdk

calls = []
sdk.handle_preemption()
sdk.handle_preemption(lambda: calls.append("stop"))
start = 0
resume = sdk.resume_from()
if resume is not None:
    start = sdk.validate(resume).step + 1
print("resumed at", start, "stop requested:", sdk.stop_requested(), flush=True)
for step in range(start, 1_000_000):
    time.sleep(0.01)
    if sdk.stop_requested():
        sdk.save(step, {"model.pt": b"weights %d" % step})
        print("callbacks:", calls, flush=True)
        sys.exit(0)
sys.exit(3)
"""


def _preempt(checkpoints: Path, **env: str) -> tuple[str, str]:
    process = sdk_start(TRAINING_LOOP, PODIUM_CHECKPOINT_DIR=str(checkpoints), **env)
    assert process.stdout is not None
    started = process.stdout.readline()
    process.send_signal(signal.SIGTERM)
    rest, errors = process.communicate(timeout=30)
    assert process.returncode == 0, errors
    return started, rest


def test_a_preempted_loop_saves_exits_0_and_resumes(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"

    started, rest = _preempt(checkpoints)
    saved = sdk.latest(checkpoints, verify=True)
    assert saved is not None
    resumed, _ = _preempt(checkpoints, PODIUM_RESUME_FROM=str(saved.path))

    assert started == "resumed at 0 stop requested: False\n"
    marker = sdk.marker_parse(rest.splitlines()[0])
    assert marker is not None
    assert (marker["kind"], marker["step"], marker["path"]) == (
        "checkpoint",
        saved.step,
        str(saved.path),
    )
    assert rest.splitlines()[1] == "callbacks: ['stop']"
    assert resumed == f"resumed at {saved.step + 1} stop requested: False\n"


def test_without_the_handler_sigterm_ends_the_process() -> None:
    process = sdk_start("import sys, time\nprint('up', flush=True)\ntime.sleep(30)\n")
    assert process.stdout is not None
    process.stdout.readline()

    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)

    assert process.returncode == -signal.SIGTERM


def test_stop_requested_is_false_until_sigterm() -> None:
    code = (
        "import os, signal\n"
        "from podium import sdk\n"
        "print(sdk.stop_requested())\n"
        "sdk.handle_preemption()\n"
        "print(sdk.stop_requested())\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "print(sdk.stop_requested())\n"
    )

    result = sdk_run(code)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False", "True"]


def test_the_handler_is_installed_from_the_main_thread_only() -> None:
    errors: list[BaseException] = []
    before = signal.getsignal(signal.SIGTERM)

    def install() -> None:
        try:
            sdk.handle_preemption()
        except RuntimeError as error:
            errors.append(error)

    thread = threading.Thread(target=install)
    thread.start()
    thread.join()

    assert [str(error) for error in errors] == [
        "handle_preemption must be called from the main thread"
    ]
    assert signal.getsignal(signal.SIGTERM) is before
