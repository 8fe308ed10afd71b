"""Writes on what jobs left behind: pinning checkpoints so they are never pruned."""

from django.db import transaction

from apps.accounts.models import User
from apps.audit.services import audit_record
from apps.scheduler.models import Job
from apps.scheduler.services.common import act_check
from apps.training.models import Checkpoint


@transaction.atomic
def checkpoint_pin(*, actor: User, job: Job, checkpoint: Checkpoint, pinned: bool) -> Checkpoint:
    """Pin a checkpoint (kept whatever the job's retention) or unpin it."""
    act_check(actor, job.workspace, "pin checkpoints")
    checkpoint = Checkpoint.objects.select_for_update().get(pk=checkpoint.pk)
    if checkpoint.pinned != pinned:
        checkpoint.pinned = pinned
        checkpoint.save(update_fields=["pinned"])
        audit_record(
            actor=actor,
            action="checkpoint.pin" if pinned else "checkpoint.unpin",
            target=checkpoint,
            workspace=job.workspace,
            changes={"job": job.pk, "step": checkpoint.step},
        )
    return checkpoint
