"""The process supervisor behind ``up``, driven with tiny Python children.

Scenarios that need real signals run the supervisor in a subprocess; the rest run it here.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from apps.system.supervisor import (
    AlreadyRunningError,
    DataDirLock,
    ProcessSpec,
    RestartLimitError,
    StartupError,
    Supervisor,
    log_rotate,
)

PY = sys.executable
ROOT = Path(__file__).resolve().parents[2]
SLEEPER = "import time; print('sleeping', flush=True); time.sleep(60)"
# Forks two grandchildren that ignore SIGTERM, notes their pids, then sleeps.
FORKER = textwrap.dedent(
    """
    import os, signal, sys, time
    pids = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            time.sleep(60)
            os._exit(0)
        pids.append(pid)
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(" ".join(map(str, pids)))
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(60)
    """
)


def gone(pid: int) -> bool:
    """True when the process no longer exists: exited and reaped."""
    return not psutil.pid_exists(pid)


def dead(pid: int) -> bool:
    """True when the process exited, even if its new parent has not reaped it yet."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def read_pid(data_dir: Path, name: str) -> int:
    return int((data_dir / "run" / f"{name}.pid").read_text())


@pytest.fixture
def lines() -> list[str]:
    return []


@pytest.fixture
def supervisor(tmp_path: Path, lines: list[str]) -> Supervisor:
    return Supervisor(
        tmp_path / "data",
        out=lines.append,
        restart_backoff=0.05,
        stop_timeout=2,
        poll_interval=0.02,
    )


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[str]]]:
    """Supervisors started in a subprocess; killed if a test leaves one behind."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def start_driver(
    spawned: list[subprocess.Popen[str]], tmp_path: Path, specs: str, **options: float
) -> subprocess.Popen[str]:
    """Run a supervisor in a subprocess over ``specs`` (Python source of a list of specs)."""
    script = tmp_path / "driver.py"
    script.write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "from apps.system.supervisor import ProcessSpec, Supervisor\n"
        "PY = sys.executable\n"
        f"supervisor = Supervisor(Path({str(tmp_path / 'data')!r}), out=print, **{options!r})\n"
        f"supervisor.run({specs}, on_ready=lambda: print('READY'))\n"
        "print('STOPPED')\n"
    )
    proc = subprocess.Popen(
        [PY, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
    )
    spawned.append(proc)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        if line.strip() == "READY":
            return proc
        seen.append(line)
    pytest.fail(f"the supervisor did not start (exit {proc.wait()}):\n{''.join(seen)}")


def test_starts_in_order_after_each_is_ready(
    supervisor: Supervisor, tmp_path: Path, lines: list[str]
) -> None:
    marker = tmp_path / "first-ready"
    first = f"import time; time.sleep(0.3); open({str(marker)!r}, 'w').close(); time.sleep(60)"
    second = f"import os, time; print('first', 'up' if os.path.exists({str(marker)!r}) else 'down')"
    second += "; time.sleep(60)"
    seen: dict[str, int] = {}

    def second_printed() -> bool:
        return {"first up", "first down"} & set(second_log())

    def second_log() -> list[str]:
        return (supervisor.log_dir / "second.log").read_text().splitlines()

    def on_ready() -> None:
        seen["first"] = read_pid(supervisor.data_dir, "first")
        seen["second"] = read_pid(supervisor.data_dir, "second")
        supervisor.request_stop()

    supervisor.run(
        [
            ProcessSpec("second", [PY, "-c", second], order=2, ready=second_printed),
            ProcessSpec("first", [PY, "-c", first], order=1, ready=marker.exists),
        ],
        on_ready=on_ready,
    )

    assert lines[0].startswith("  first is up")
    assert lines[1].startswith("  second is up")
    assert lines[2] == "Stop requested; stopping (signal again to kill at once)."
    assert "first up" in second_log()
    assert all(gone(pid) for pid in seen.values())
    assert not list((supervisor.data_dir / "run").glob("*.pid"))


def test_not_ready_in_time_names_the_process_and_shows_its_log(supervisor: Supervisor) -> None:
    booting = "import time; print('still booting', flush=True); time.sleep(60)"

    with pytest.raises(StartupError) as error:
        supervisor.run(
            [ProcessSpec("slow", [PY, "-c", booting], ready=lambda: False, ready_timeout=0.5)]
        )

    assert "slow was not ready after" in str(error.value)
    assert "still booting" in str(error.value)
    assert not (supervisor.data_dir / "run" / "slow.pid").exists()


def test_exit_during_start_is_an_error_with_the_exit_code(supervisor: Supervisor) -> None:
    failing = "import sys; print('bad config'); sys.exit(3)"

    with pytest.raises(StartupError, match=r"broken exited while starting \(exit code 3\)"):
        supervisor.run([ProcessSpec("broken", [PY, "-c", failing], ready=lambda: False)])


def test_a_crashed_child_is_reported_and_restarted(
    supervisor: Supervisor, tmp_path: Path, lines: list[str]
) -> None:
    marker = tmp_path / "crashed-once"
    flaky = (
        f"import os, sys, time\n"
        f"if not os.path.exists({str(marker)!r}):\n"
        f"    open({str(marker)!r}, 'w').close(); print('boom', flush=True); sys.exit(7)\n"
        f"time.sleep(60)"
    )
    pids: list[int] = []

    def out(line: str) -> None:
        lines.append(line)
        if line.startswith("Restarted flaky"):
            pids.append(read_pid(supervisor.data_dir, "flaky"))
            supervisor.request_stop()

    exits: list[tuple[int, int]] = []
    supervisor.out = out
    spec = ProcessSpec("flaky", [PY, "-c", flaky], on_exit=lambda *e: exits.append(e))
    supervisor.run([spec])

    report = next(line for line in lines if line.startswith("flaky exited unexpectedly"))
    assert "(exit code 7)" in report
    assert "boom" in report
    assert any(
        line.startswith("Restarting flaky in ") and "(restart 1 of at most 5 in 60 s)" in line
        for line in lines
    )
    assert len(pids) == 1
    assert gone(pids[0])
    assert len(exits) == 1
    assert exits[0][1] == 7
    assert exits[0][0] != pids[0]


def test_past_the_restart_bound_everything_stops(supervisor: Supervisor) -> None:
    supervisor.max_restarts = 2
    pids: list[int] = []

    def on_ready() -> None:
        pids.append(read_pid(supervisor.data_dir, "steady"))

    with pytest.raises(RestartLimitError, match=r"crashy exited 3 times within 60 s; giving up"):
        supervisor.run(
            [
                ProcessSpec("steady", [PY, "-c", SLEEPER]),
                ProcessSpec("crashy", [PY, "-c", "import sys; sys.exit(1)"]),
            ],
            on_ready=on_ready,
        )

    assert gone(pids[0])
    assert not list((supervisor.data_dir / "run").glob("*.pid"))


def test_sigterm_stops_every_child_and_grandchild(
    spawned: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    grandchildren = tmp_path / "grandchildren"
    specs = (
        f'[ProcessSpec("forker", [PY, "-c", {FORKER!r}, {str(grandchildren)!r}],'
        f" ready=Path({str(grandchildren)!r}).exists),"
        f' ProcessSpec("plain", [PY, "-c", {SLEEPER!r}])]'
    )
    driver = start_driver(spawned, tmp_path, specs, stop_timeout=0.5)
    data = tmp_path / "data"
    pids = [read_pid(data, "forker"), read_pid(data, "plain")]
    pids += [int(pid) for pid in grandchildren.read_text().split()]
    assert not any(gone(pid) for pid in pids)

    driver.send_signal(signal.SIGTERM)
    output, _ = driver.communicate(timeout=10)

    assert driver.returncode == 0
    assert output.index("stopping plain") < output.index("stopping forker")
    assert "forker did not stop within 0.5 s; killing it" in output
    assert "STOPPED" in output
    assert all(gone(pid) for pid in pids)
    assert not list((data / "run").glob("*.pid"))


def test_a_second_signal_kills_at_once(
    spawned: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    driver = start_driver(
        spawned, tmp_path, f'[ProcessSpec("stubborn", [PY, "-c", {stubborn!r}])]', stop_timeout=30
    )
    pid = read_pid(tmp_path / "data", "stubborn")

    driver.send_signal(signal.SIGINT)
    time.sleep(0.3)
    driver.send_signal(signal.SIGINT)
    driver.communicate(timeout=5)

    assert driver.returncode == 0
    assert gone(pid)


def test_children_die_with_a_killed_supervisor(
    spawned: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    driver = start_driver(spawned, tmp_path, f'[ProcessSpec("orphan", [PY, "-c", {SLEEPER!r}])]')
    pid = read_pid(tmp_path / "data", "orphan")

    driver.kill()
    driver.wait()

    assert wait_until(lambda: dead(pid))


def test_a_second_supervisor_on_the_same_data_dir_is_refused(
    spawned: list[subprocess.Popen[str]], tmp_path: Path, supervisor: Supervisor
) -> None:
    driver = start_driver(spawned, tmp_path, f'[ProcessSpec("only", [PY, "-c", {SLEEPER!r}])]')

    with pytest.raises(AlreadyRunningError) as error:
        supervisor.run([ProcessSpec("other", [PY, "-c", SLEEPER])])

    data = (tmp_path / "data").resolve()
    assert str(error.value) == f"Podium is already running from {data} (pid {driver.pid})"
    assert not (data / "logs" / "other.log").exists()


def test_a_stale_lock_file_does_not_block(tmp_path: Path) -> None:
    (tmp_path / "up.lock").write_text("4194303\n")
    lock = DataDirLock(tmp_path)

    lock.acquire()

    assert (tmp_path / "up.lock").read_text() == f"{os.getpid()}\n"
    with pytest.raises(AlreadyRunningError, match=f"pid {os.getpid()}"):
        DataDirLock(tmp_path).acquire()
    lock.release()
    again = DataDirLock(tmp_path)
    again.acquire()
    again.release()


def test_a_big_log_is_moved_aside_at_the_next_start(tmp_path: Path) -> None:
    log = tmp_path / "web.log"
    log.write_bytes(b"x" * 2048)
    (tmp_path / "web.log.1").write_bytes(b"older")

    assert not log_rotate(log, max_bytes=4096)
    assert log_rotate(log, max_bytes=1024)

    assert not log.exists()
    assert (tmp_path / "web.log.1").read_bytes() == b"x" * 2048
    assert not log_rotate(log, max_bytes=1024)
