"""A save killed at any point: what was complete stays complete, nothing half-written is
offered, and the next save works.

The writer runs in a process of its own. To stop it at every step of the write, that
process wraps ``os.fsync`` and ``os.rename`` (and marks each file its state function
writes) so that the N-th of these calls first waits on stdin; the test kills it there.
"""

import random
import signal
import subprocess
from pathlib import Path

import pytest

from podium import sdk
from tests.sdk.conftest import sdk_run, sdk_start

PAUSING_SAVE = """
import os, sys
from podium import sdk

directory, step, version, pause_at = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
events = []

def pausing(name, real):
    def call(*args):
        events.append(name)
        if len(events) == pause_at:
            print("paused", name, flush=True)
            sys.stdin.readline()
        return real(*args)
    return call

os.fsync = pausing("fsync", os.fsync)
os.rename = pausing("rename", os.rename)
written = pausing("written", lambda: None)

def write(tmpdir):
    for name in ("model.bin", "optimizer.bin"):
        (tmpdir / name).write_bytes(f"{name} {version} ".encode() * 500)
        written()

sdk.save(step, write, directory=directory)
print(" ".join(events), flush=True)
"""

RANDOM_SAVE = """
import os, sys, time
from podium import sdk

directory = sys.argv[1]
chunk = os.urandom(1 << 20)

def write(tmpdir):
    for index in range(4):
        with open(tmpdir / f"shard-{index}.bin", "wb") as handle:
            for _ in range(3):
                handle.write(chunk)

print("start", flush=True)
started = time.monotonic()
sdk.save(2, write, directory=directory)
print(time.monotonic() - started, flush=True)
"""


def _baseline(directory: Path, *, steps: tuple[int, ...]) -> None:
    for step in steps:
        sdk.save(step, {"model.bin": f"model.bin old{step} ".encode() * 500}, directory=directory)


def _version(checkpoint: sdk.Checkpoint) -> str:
    return (checkpoint.path / "model.bin").read_text().split()[1]


def _events(directory: Path, step: int) -> list[str]:
    """The steps of a whole write, in order (a dry run that never pauses)."""
    result = sdk_run(PAUSING_SAVE, str(directory), str(step), "new", "0")
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\n")[-2].split()


def _kill_at(directory: Path, step: int, pause_at: int) -> str:
    process = sdk_start(PAUSING_SAVE, str(directory), str(step), "new", str(pause_at))
    assert process.stdout is not None
    line = process.stdout.readline()
    process.kill()
    process.communicate(timeout=30)
    assert line.startswith("paused"), line
    return line.split()[1]


def _assert_nothing_half_written(directory: Path) -> None:
    found = sdk.scan(directory, verify=True)
    assert all(entry.complete for entry in found), found
    assert not [entry for entry in found if entry.path.name.startswith(".")]


def _assert_next_save_works(directory: Path) -> None:
    saved = sdk.save(3, {"model.bin": b"model.bin after "}, directory=directory)
    latest = sdk.latest(directory, verify=True)
    assert saved is not None
    assert latest is not None
    assert latest.step == 3


@pytest.fixture(scope="module")
def new_step_events(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    directory = tmp_path_factory.mktemp("dry-new")
    _baseline(directory, steps=(1,))
    return _events(directory, 2)


@pytest.fixture(scope="module")
def replacing_events(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    directory = tmp_path_factory.mktemp("dry-replace")
    _baseline(directory, steps=(1, 2))
    return _events(directory, 2)


def test_the_pauses_cover_every_step_of_the_write(
    new_step_events: list[str], replacing_events: list[str]
) -> None:
    files = ["written", "written", "fsync", "fsync", "fsync"]  # each file, then the temp dir
    manifest = ["fsync", "fsync"]  # the manifest, then the temp dir again

    assert new_step_events == [*files, *manifest, "rename", "fsync"]
    assert replacing_events == [*files, *manifest, "rename", "rename", "fsync"]


@pytest.mark.parametrize("pause_at", range(1, 10))
def test_a_new_step_killed_at_any_point_is_all_or_nothing(
    tmp_path: Path, pause_at: int, new_step_events: list[str]
) -> None:
    into_place = len(new_step_events) - new_step_events[::-1].index("rename")  # 1-based
    directory = tmp_path / "checkpoints"
    _baseline(directory, steps=(1,))

    event = _kill_at(directory, 2, pause_at)

    latest = sdk.latest(directory, verify=True)
    assert event == new_step_events[pause_at - 1]
    assert latest is not None
    assert (latest.step, _version(latest)) == ((2, "new") if pause_at > into_place else (1, "old1"))
    assert sdk.latest(directory) == latest
    _assert_nothing_half_written(directory)
    _assert_next_save_works(directory)


@pytest.mark.parametrize("pause_at", range(1, 11))
def test_a_replaced_step_killed_at_any_point_leaves_a_complete_one(
    tmp_path: Path, pause_at: int, replacing_events: list[str]
) -> None:
    aside, into_place = (i + 1 for i, name in enumerate(replacing_events) if name == "rename")
    directory = tmp_path / "checkpoints"
    _baseline(directory, steps=(1, 2))

    _kill_at(directory, 2, pause_at)

    latest = sdk.latest(directory, verify=True)
    assert latest is not None
    if pause_at <= aside:
        assert (latest.step, _version(latest)) == (2, "old2")
    elif pause_at <= into_place:
        assert (latest.step, _version(latest)) == (1, "old1")  # the old 2 is aside, hidden
    else:
        assert (latest.step, _version(latest)) == (2, "new")
    _assert_nothing_half_written(directory)
    _assert_next_save_works(directory)


def test_saves_killed_at_random_moments_never_leave_a_broken_checkpoint(tmp_path: Path) -> None:
    full = sdk_run(RANDOM_SAVE, str(tmp_path / "timed"))
    assert full.returncode == 0, full.stderr
    duration = float(full.stdout.split()[-1])
    rng = random.Random(5)  # noqa: S311  (kill times, not secrets)
    outcomes = []

    for run in range(20):
        directory = tmp_path / f"run-{run}"
        _baseline(directory, steps=(1,))
        process = sdk_start(RANDOM_SAVE, str(directory))
        assert process.stdout is not None
        assert process.stdout.readline() == "start\n"
        try:
            process.communicate(timeout=rng.uniform(0, duration * 1.2))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=30)

        latest = sdk.latest(directory, verify=True)
        assert latest is not None
        assert latest.step in {1, 2}
        outcomes.append(latest.step)
        _assert_nothing_half_written(directory)
        _assert_next_save_works(directory)
    assert 1 in outcomes
