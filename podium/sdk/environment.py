"""What Podium tells a job process through its environment.

Outside Podium none of these variables is set, and a script still runs: checkpoints go to
``./checkpoints``, there is nothing to resume from, and the process is rank 0.
"""

import os
from pathlib import Path

CHECKPOINT_DIR_ENV = "PODIUM_CHECKPOINT_DIR"
RESUME_FROM_ENV = "PODIUM_RESUME_FROM"
LOCAL_CHECKPOINT_DIR = "checkpoints"


def checkpoint_dir() -> Path:
    """Where this job keeps its checkpoints: ``$PODIUM_CHECKPOINT_DIR``, else ``./checkpoints``."""
    return Path(os.environ.get(CHECKPOINT_DIR_ENV) or LOCAL_CHECKPOINT_DIR)


def resume_from() -> Path | None:
    """The checkpoint directory this attempt resumes from (``$PODIUM_RESUME_FROM``), or None."""
    value = os.environ.get(RESUME_FROM_ENV)
    return Path(value) if value else None


def global_rank() -> int:
    """This process's rank among all processes of the job (``$RANK``, 0 when unset)."""
    value = os.environ.get("RANK") or "0"
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"RANK is {value!r}, which is not a process rank") from None


def _number_or_text(name: str) -> int | str | None:
    value = os.environ.get(name)
    if not value:
        return None
    return int(value) if value.isascii() and value.isdigit() else value


def job_id() -> int | str | None:
    """The Podium job this process belongs to, or None outside Podium."""
    return _number_or_text("PODIUM_JOB_ID")


def attempt() -> int | str | None:
    """Which attempt of the job this is (1 for the first run), or None outside Podium."""
    return _number_or_text("PODIUM_ATTEMPT")
