"""What training adds to a job: its datasets at submit, and to each attempt's start its
checkpoint directory, its resume point and its datasets' paths (the scheduler calls these
through ``settings.JOB_SUBMIT_HOOKS`` and ``JOB_LAUNCH_HOOKS``)."""

import time
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from apps.accounts.models import User
from apps.scheduler.launch import Launch
from apps.scheduler.models import Job
from apps.training.checkpoints import job_checkpoint_dir, resume_point
from apps.training.models import Checkpoint
from apps.training.services.dataset_jobs import (
    datasets_gone,
    datasets_launch_env,
    job_datasets_attach,
)
from apps.training.tasks import checkpoints_prune_soon


def job_submitted(job: Job, spec: Any, actor: User) -> None:
    """Attach the datasets the spec names (an unknown one refuses the submit)."""
    refs = list(getattr(spec, "datasets", None) or [])
    if refs:
        job_datasets_attach(job=job, refs=refs, actor=actor)


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _resume(job: Job, launch: Launch) -> None:
    started = time.time()
    transaction.on_commit(lambda: checkpoints_prune_soon(job.pk, leftovers_before=started))
    point = resume_point(job.pk)
    for problem in point.skipped if point else ():
        launch.notes.append(("checkpoint_skipped", f"not resuming from {problem}", {}))
    if point is None:
        launch.notes.append(("restart", "no complete checkpoint: starting from the beginning", {}))
        return
    launch.env["PODIUM_RESUME_FROM"] = str(point.path)
    launch.env["PODIUM_RESUME_STEP"] = str(point.step)
    age = _age((timezone.now() - point.written_at).total_seconds())
    launch.notes.append(
        (
            "resume",
            f"resuming from the checkpoint at step {point.step} (written {age} ago)",
            {"step": point.step, "path": str(point.path)},
        )
    )
    Checkpoint.objects.filter(job_id=job.pk, step=point.step).update(
        resumed_count=F("resumed_count") + 1
    )


def attempt_launch(jobs: list[Job], ranks: dict[int, list[tuple[int, int]]]) -> dict[int, Launch]:
    """Each placed attempt's checkpoint directory, resume point and dataset paths."""
    datasets = datasets_launch_env([job.pk for job in jobs])
    gone = datasets_gone([job.pk for job in jobs if job.attempt > 1])
    launches: dict[int, Launch] = {}
    for job in jobs:
        launch = Launch(env={"PODIUM_CHECKPOINT_DIR": str(job_checkpoint_dir(job.pk))})
        launch.env.update(datasets.get(job.pk, {}))
        for row in gone.get(job.pk, []):
            reason = f"dataset {row.ref} was deleted: {row.env_name} is not set"
            launch.notes.append(("dataset_missing", reason, {"ref": row.ref}))
        # A first attempt has nothing to resume from (attempts are counted over the job's
        # whole life, requeues after it ended included); the pass reads no storage for it.
        if job.resume and job.attempt > 1:
            _resume(job, launch)
        launches[job.pk] = launch
    return launches
