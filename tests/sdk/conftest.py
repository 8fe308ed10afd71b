"""Fixtures for the SDK tests: a script that runs outside Podium, a checkpoint directory,
and the SDK in a Python process of its own (to kill it, signal it, or limit it)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
JOB_ENV = (
    "RANK",
    "PODIUM_CHECKPOINT_DIR",
    "PODIUM_RESUME_FROM",
    "PODIUM_JOB_ID",
    "PODIUM_ATTEMPT",
)


@pytest.fixture(autouse=True)
def _outside_podium(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in JOB_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "checkpoints"


def sdk_env(**extra: str) -> dict[str, str]:
    """The environment of a process that imports ``podium.sdk`` from this tree."""
    env = {key: value for key, value in os.environ.items() if key not in JOB_ENV}
    env.pop("PYTHONUNBUFFERED", None)
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def sdk_start(code: str, *args: str, **env: str) -> subprocess.Popen[str]:
    """Start ``python -c code args...`` with pipes for stdin and stdout."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=sdk_env(**env),
    )


def sdk_run(code: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -c code args...`` to its end."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=sdk_env(**env),
        timeout=60,
        check=False,
    )
