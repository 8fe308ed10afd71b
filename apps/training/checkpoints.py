"""A job's checkpoints on storage, as the console knows them.

A job writes ``<PODIUM_CHECKPOINT_ROOT>/job-<id>/<step>/`` through ``podium.sdk``; the
console reads the same storage. ``Checkpoint`` rows mirror what ``checkpoints_sync`` last
found there (complete or not, and why not) and what the SDK announced as it saved. A resume
uses ``resume_point``: the newest checkpoint that is complete when read at that moment and
was not found corrupt. An interrupted write never appears: the SDK writes into a hidden
directory and renames it last.

After each new checkpoint a worker runs ``checkpoints_prune``: it verifies the checksums
of the checkpoints not verified yet (so that ``resume_point``, in the scheduling pass,
checks only sizes), keeps the job's newest ``checkpoint_keep`` complete checkpoints (the
setting's default when the job names none) plus pinned ones, and removes the rest; when
an attempt starts it also removes what writes cut short by the previous one left.
"""

import logging
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.scheduler.models import Job
from apps.training.models import Checkpoint
from podium.sdk import CheckpointError, Found, scan, validate

logger = logging.getLogger(__name__)


def job_checkpoint_dir(job_id: int) -> Path:
    """Where the job's checkpoints live (``PODIUM_CHECKPOINT_DIR`` of its processes)."""
    return Path(settings.PODIUM_CHECKPOINT_ROOT) / f"job-{job_id}"


def _written(found: Found) -> datetime:
    if found.written_at:
        return datetime.fromtimestamp(found.written_at, tz=UTC)
    return timezone.now()


def checkpoints_sync(job_id: int) -> list[Checkpoint]:
    """Read the job's checkpoint directory and bring its rows up to date (in two writes);
    return the rows on storage and those found gone now, newest first.

    Checkpoints gone from storage are marked deleted; their rows stay for the record.
    """
    found = {f.step: f for f in scan(job_checkpoint_dir(job_id))}
    now = timezone.now()
    with transaction.atomic():
        # Rows already marked deleted stay as they are unless their step is back.
        rows = {
            c.step: c
            for c in Checkpoint.objects.select_for_update().filter(
                Q(deleted=False) | Q(step__in=list(found)), job_id=job_id
            )
        }
        new = [
            Checkpoint(job_id=job_id, step=step, written_at=_written(entry))
            for step, entry in found.items()
            if step not in rows
        ]
        for row in [*rows.values(), *new]:
            entry = found.get(row.step)
            row.checked_at = now
            row.deleted = entry is None
            if entry is not None and not row.corrupt:
                row.path = str(entry.path)
                row.complete = entry.complete
                row.problem = entry.problem[:300]
                row.size_bytes = entry.size_bytes
                row.file_count = entry.file_count
        fields = [
            "path",
            "complete",
            "problem",
            "size_bytes",
            "file_count",
            "deleted",
            "checked_at",
        ]
        Checkpoint.objects.bulk_update(list(rows.values()), fields)
        Checkpoint.objects.bulk_create(new)
        rows.update((row.step, row) for row in new)
    return sorted(rows.values(), key=lambda c: c.step, reverse=True)


@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint an attempt resumes from."""

    step: int
    path: Path
    written_at: datetime
    skipped: tuple[str, ...]  # newer checkpoints refused, with why


def resume_point(job_id: int) -> ResumePoint | None:
    """The newest checkpoint of the job that is complete now, or None.

    This runs in the scheduling pass, so it reads checksums only of a checkpoint no worker
    verified yet (and then only up to ``CHECKPOINT_VERIFY_MAX_BYTES``); file sizes are
    always checked, and one found corrupt is never offered.
    """
    limit = settings.PODIUM["CHECKPOINT_VERIFY_MAX_BYTES"]
    known = {
        step: (verified_at, corrupt, problem)
        for step, verified_at, corrupt, problem in Checkpoint.objects.filter(
            job_id=job_id, deleted=False
        ).values_list("step", "verified_at", "corrupt", "problem")
    }
    skipped: list[str] = []
    for entry in scan(job_checkpoint_dir(job_id)):
        verified_at, corrupt, problem = known.get(entry.step, (None, False, ""))
        if corrupt or not entry.complete:
            skipped.append(f"step {entry.step}: {problem if corrupt else entry.problem}")
            continue
        verify = verified_at is None and entry.size_bytes <= limit
        try:
            checkpoint = validate(entry.path, verify=verify)
        except CheckpointError as error:
            skipped.append(f"step {entry.step}: {error}")
            continue
        return ResumePoint(
            step=checkpoint.step,
            path=checkpoint.path,
            written_at=_written(entry),
            skipped=tuple(skipped),
        )
    return None


def checkpoint_announced(
    *,
    job_id: int,
    attempt: int,
    step: int,
    path: str,
    size_bytes: int,
    file_count: int,
    at: datetime,
) -> Checkpoint:
    """Record a checkpoint the SDK just finished writing (its marker line)."""
    row, _ = Checkpoint.objects.update_or_create(
        job_id=job_id,
        step=step,
        defaults={
            "path": path[:1024],
            "attempt": attempt,
            "size_bytes": size_bytes,
            "file_count": file_count,
            "complete": True,
            "problem": "",
            "verified_at": None,
            "corrupt": False,
            "deleted": False,
            "written_at": at,
        },
    )
    return row


def leftovers_remove(job_id: int, *, before: float) -> int:
    """Remove the hidden directories of writes cut short (``.tmp-*``) made before the
    unix time ``before`` (the start of an attempt: no process of the job writes them any
    more); return how many were removed."""
    root = job_checkpoint_dir(job_id)
    try:
        entries = [e for e in root.iterdir() if e.name.startswith(".tmp-") and e.is_dir()]
    except OSError:
        return 0
    removed = 0
    for entry in entries:
        try:
            stale = entry.stat().st_mtime < before
        except OSError:
            continue
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
            removed += not entry.exists()
    return removed


def checkpoint_keep_of(job: Job) -> int:
    """How many complete checkpoints the job keeps besides pinned ones."""
    return int(job.checkpoint_keep or settings.PODIUM["CHECKPOINT_KEEP"])


def checkpoints_verify(job_id: int) -> list[int]:
    """Read every file of the job's complete checkpoints not verified yet against their
    manifests' checksums (a worker's job, off the scheduling pass); mark the ones that
    do not match corrupt. Return the steps found corrupt."""
    rows = Checkpoint.objects.filter(
        job_id=job_id, complete=True, deleted=False, verified_at__isnull=True
    ).order_by("-step")
    corrupt: list[int] = []
    for row in rows:
        try:
            validate(row.path, verify=True)
        except CheckpointError as error:
            row.complete, row.corrupt, row.problem = False, True, str(error)[:300]
            corrupt.append(row.step)
        row.verified_at = timezone.now()
        row.save(update_fields=["complete", "corrupt", "problem", "verified_at"])
    return corrupt


def checkpoints_prune(job_id: int, *, leftovers_before: float | None = None) -> list[int]:
    """Remove the job's complete checkpoints beyond the newest ones it keeps (pinned ones
    stay) and, given ``leftovers_before``, the writes cut short before then; return the
    steps removed."""
    job = Job.objects.filter(pk=job_id).only("pk", "checkpoint_keep").first()
    if job is None:
        return []
    if leftovers_before is not None:
        count = leftovers_remove(job_id, before=leftovers_before)
        if count:
            logger.info("job %s: removed %d unfinished checkpoint writes", job_id, count)
    keep = checkpoint_keep_of(job)
    checkpoints_sync(job_id)
    checkpoints_verify(job_id)
    rows = Checkpoint.objects.filter(job_id=job_id, deleted=False).order_by("-step")
    unpinned = [c for c in rows if c.complete and not c.pinned]
    removed: list[int] = []
    for row in unpinned[keep:]:
        path = Path(row.path)
        if path.parent != job_checkpoint_dir(job_id) or not path.name.isdigit():
            logger.warning("checkpoint %s of job %s is not where it belongs", path, job_id)
            continue
        shutil.rmtree(path, ignore_errors=True)
        if path.exists():
            logger.warning("checkpoint %s of job %s could not be removed", path, job_id)
            continue
        row.deleted = True
        row.save(update_fields=["deleted"])
        removed.append(row.step)
    return removed
