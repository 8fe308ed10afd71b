"""Audit retention, run by beat."""

from celery import shared_task

from apps.audit.services import audit_prune


@shared_task(name="audit.prune", ignore_result=True)
def prune() -> int:
    """Delete audit entries older than PODIUM_AUDIT_RETENTION_DAYS."""
    return audit_prune()
