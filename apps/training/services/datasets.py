"""Writes on datasets: create one from a path on shared storage or an uploaded file, add,
rescan and delete versions, describe and delete datasets; scan a version (the worker's
part). Jobs reading datasets: ``apps.training.services.dataset_jobs``.

Members and workspace admins change a workspace's datasets; viewers never. A registered
path is resolved (symlinks included) and must be a readable file or directory inside one
of ``settings.PODIUM_DATASET_ROOTS``, outside the upload area. An upload is streamed to a
staging file under the size limit before any row is written, then renamed to
``<DATASET_UPLOAD_DIR>/<workspace id>/<dataset>/<version>/<file name>``. A new version is
created ``scanning``; a Celery task then measures it. A version that a job which has not
finished reads cannot be deleted, nor can its dataset.
"""

import logging
import re
import time
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from apps.accounts.models import User, Workspace
from apps.audit.services import audit_record
from apps.scheduler.lifecycle import TERMINAL_STATES
from apps.scheduler.services.common import act_check
from apps.system.errors import ApplicationError, ConflictError
from apps.training.datasets.confinement import Confinement, PathRefused, path_resolve
from apps.training.datasets.preview import storable
from apps.training.datasets.scan import ScanError, scan
from apps.training.datasets.uploads import (
    UploadTooLarge,
    file_name_clean,
    upload_place,
    upload_remove,
    upload_stage,
)
from apps.training.models import Dataset, DatasetVersion, JobDataset

logger = logging.getLogger(__name__)

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_DESCRIPTION_CHARS = 2000
MAX_NOTE_CHARS = 300
# What viewers are refused: "Viewers cannot change datasets."
DENIED = "change datasets"
# How often a running scan writes its progress.
PROGRESS_INTERVAL_S = 0.5

Source = DatasetVersion.Source
State = DatasetVersion.State


@dataclass(frozen=True)
class DatasetSource:
    """What a new version holds: a ``path`` on shared storage or an ``upload``, and a note."""

    path: str = ""
    upload: UploadedFile | None = None
    note: str = ""


@dataclass
class _Incoming:
    """A checked source on its way into a version: the registered path, or the upload's
    current place on disk (staged, then moved) and its file name."""

    source: str
    path: Path
    file_name: str = ""

    def discard(self) -> None:
        if self.source == Source.UPLOAD:
            upload_remove(self.path, _upload_dir())


# Checks ------------------------------------------------------------------------------------


def _name_check(name: str) -> str:
    name = (name or "").strip()
    if not NAME.fullmatch(name):
        raise ApplicationError(
            "Name must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit.",
            field="name",
        )
    return name


def _text_check(value: str, field: str, limit: int) -> str:
    value = (value or "").strip()
    if len(value) > limit:
        raise ApplicationError(
            f"{field.capitalize()} is longer than {limit} characters.", field=field
        )
    return value


def _upload_dir() -> Path:
    return Path(settings.PODIUM_DATASET_UPLOAD_DIR)


def _registered_confinement() -> Confinement:
    """Where registered paths, and the links inside them, may lead."""
    return Confinement(tuple(settings.PODIUM_DATASET_ROOTS), excluded=(_upload_dir(),))


def _confinement_of(version: DatasetVersion) -> Confinement:
    if version.source == Source.UPLOAD:
        return Confinement((Path(version.path).parent,))
    return _registered_confinement()


def _max_upload_bytes() -> int:
    return int(settings.PODIUM["DATASET_UPLOAD_MAX_MB"]) * 1024 * 1024


def _source_take(source: DatasetSource) -> _Incoming:
    """Check the source; an upload is streamed to its staging file here, outside any
    transaction (a large file must not hold the database)."""
    has_path = bool((source.path or "").strip())
    if has_path == (source.upload is not None):
        raise ApplicationError("Give either a path on shared storage or a file.", field="path")
    if source.upload is None:
        try:
            return _Incoming(Source.PATH, path_resolve(source.path, _registered_confinement()))
        except PathRefused as refusal:
            raise ApplicationError(str(refusal), field="path") from None
    limit = _max_upload_bytes()
    too_large = f"The file is larger than the upload limit of {limit // (1024 * 1024)} MB."
    if source.upload.size is not None and source.upload.size > limit:
        raise ApplicationError(too_large, field="file")
    try:
        staged = upload_stage(source.upload.chunks(), _upload_dir(), limit)
    except UploadTooLarge:
        raise ApplicationError(too_large, field="file") from None
    return _Incoming(Source.UPLOAD, staged, file_name_clean(source.upload.name or ""))


def _unfinished_readers_check(versions: QuerySet[DatasetVersion]) -> None:
    """ConflictError when a job that has not finished reads one of ``versions``."""
    use = (
        JobDataset.objects.filter(version__in=versions)
        .exclude(job__state__in=TERMINAL_STATES)
        .select_related("job")
        .order_by("job_id")
        .first()
    )
    if use is not None:
        raise ConflictError(
            f"Job {use.job_id} ({use.job.name}) reads {use.ref} and has not finished; "
            "wait for it or cancel it first."
        )


# Versions ----------------------------------------------------------------------------------


def _scan_enqueue(version_id: int, task_id: str) -> None:
    from apps.training.tasks import dataset_scan  # the tasks import this module

    try:
        dataset_scan.apply_async(args=[version_id], task_id=task_id)
    except Exception:
        logger.warning("could not queue the scan of dataset version %s", version_id)


def _scan_on_commit(version: DatasetVersion) -> None:
    transaction.on_commit(partial(_scan_enqueue, version.pk, version.task_id))


def _version_create(
    *, actor: User, dataset: Dataset, incoming: _Incoming, note: str
) -> DatasetVersion:
    """The dataset's next version, scanned once the transaction commits; an upload is moved
    into the version's own directory."""
    dataset.last_version += 1
    dataset.save(update_fields=["last_version"])
    if incoming.source == Source.UPLOAD:
        folder = _upload_dir() / str(dataset.workspace_id) / dataset.name
        destination = folder / str(dataset.last_version) / incoming.file_name
        upload_place(incoming.path, destination)
        incoming.path = destination
    version = DatasetVersion.objects.create(
        dataset=dataset,
        version=dataset.last_version,
        source=incoming.source,
        path=str(incoming.path),
        note=note,
        created_by=actor,
        task_id=uuid.uuid4().hex,
    )
    _scan_on_commit(version)
    return version


def dataset_create(
    *,
    actor: User,
    workspace: Workspace,
    name: str,
    description: str = "",
    source: DatasetSource,
) -> Dataset:
    """A new dataset of ``workspace`` whose version 1 is ``source``."""
    act_check(actor, workspace, DENIED)
    name = _name_check(name)
    description = _text_check(description, "description", MAX_DESCRIPTION_CHARS)
    note = _text_check(source.note, "note", MAX_NOTE_CHARS)
    taken = ConflictError(f"{workspace.name} already has a dataset named {name}.", field="name")
    if Dataset.objects.filter(workspace=workspace, name=name).exists():
        raise taken
    incoming = _source_take(source)
    try:
        with transaction.atomic():
            dataset = Dataset.objects.create(
                workspace=workspace, name=name, description=description, created_by=actor
            )
            version = _version_create(actor=actor, dataset=dataset, incoming=incoming, note=note)
            audit_record(
                actor=actor,
                action="dataset.create",
                target=dataset,
                workspace=workspace,
                changes={
                    "version": version.version,
                    "source": version.source,
                    "path": version.path,
                },
            )
    except IntegrityError:
        incoming.discard()
        raise taken from None
    except BaseException:
        incoming.discard()
        raise
    return dataset


def dataset_version_add(*, actor: User, dataset: Dataset, source: DatasetSource) -> DatasetVersion:
    """The dataset's next version, holding ``source``."""
    act_check(actor, dataset.workspace, DENIED)
    note = _text_check(source.note, "note", MAX_NOTE_CHARS)
    incoming = _source_take(source)
    try:
        with transaction.atomic():
            locked = Dataset.objects.select_for_update().get(pk=dataset.pk)
            version = _version_create(actor=actor, dataset=locked, incoming=incoming, note=note)
            audit_record(
                actor=actor,
                action="dataset_version.create",
                target=version,
                workspace=dataset.workspace,
                changes={"source": version.source, "path": version.path},
            )
    except BaseException:
        incoming.discard()
        raise
    dataset.last_version = locked.last_version
    return version


@transaction.atomic
def dataset_version_rescan(*, actor: User, version: DatasetVersion) -> DatasetVersion:
    """Scan a version again (its files changed, or its scan failed or was lost)."""
    dataset = version.dataset
    act_check(actor, dataset.workspace, DENIED)
    version.state = State.SCANNING
    version.progress = 0.0
    version.error = ""
    version.task_id = uuid.uuid4().hex
    version.save(update_fields=["state", "progress", "error", "task_id"])
    audit_record(
        actor=actor, action="dataset_version.scan", target=version, workspace=dataset.workspace
    )
    _scan_on_commit(version)
    return version


def _uploads_remove(paths: list[str]) -> None:
    for path in paths:
        upload_remove(Path(path), _upload_dir())


@transaction.atomic
def dataset_version_delete(*, actor: User, version: DatasetVersion) -> None:
    """Delete a version no unfinished job reads; an uploaded file goes once this commits."""
    dataset = version.dataset
    act_check(actor, dataset.workspace, DENIED)
    Dataset.objects.select_for_update().filter(pk=dataset.pk).first()
    _unfinished_readers_check(DatasetVersion.objects.filter(pk=version.pk))
    audit_record(
        actor=actor,
        action="dataset_version.delete",
        target=version,
        workspace=dataset.workspace,
        changes={"path": version.path},
    )
    uploaded = [version.path] if version.source == Source.UPLOAD else []
    version.delete()
    transaction.on_commit(partial(_uploads_remove, uploaded))


@transaction.atomic
def dataset_update(*, actor: User, dataset: Dataset, description: str) -> Dataset:
    """Change the dataset's description."""
    act_check(actor, dataset.workspace, DENIED)
    dataset.description = _text_check(description, "description", MAX_DESCRIPTION_CHARS)
    dataset.save(update_fields=["description"])
    audit_record(
        actor=actor,
        action="dataset.update",
        target=dataset,
        workspace=dataset.workspace,
        changes={"description": dataset.description},
    )
    return dataset


@transaction.atomic
def dataset_delete(*, actor: User, dataset: Dataset) -> None:
    """Delete a dataset none of whose versions an unfinished job reads, with its versions;
    uploaded files go once this commits. Jobs that read it keep the reference as text."""
    act_check(actor, dataset.workspace, DENIED)
    Dataset.objects.select_for_update().filter(pk=dataset.pk).first()
    versions = DatasetVersion.objects.filter(dataset=dataset)
    _unfinished_readers_check(versions)
    uploaded = list(versions.filter(source=Source.UPLOAD).values_list("path", flat=True))
    audit_record(
        actor=actor,
        action="dataset.delete",
        target=dataset,
        workspace=dataset.workspace,
        changes={"versions": dataset.last_version},
    )
    dataset.delete()
    transaction.on_commit(partial(_uploads_remove, uploaded))


# Scans -------------------------------------------------------------------------------------


class _Superseded(Exception):
    """The version was deleted or rescanned while this scan ran."""


class _ProgressWriter:
    """Writes a scan's progress to its row at most every ``PROGRESS_INTERVAL_S``."""

    def __init__(self, rows: QuerySet[DatasetVersion]) -> None:
        self.rows = rows
        self.written_at = time.monotonic()

    def __call__(self, fraction: float) -> None:
        now = time.monotonic()
        if now - self.written_at >= PROGRESS_INTERVAL_S:
            self.written_at = now
            if not self.rows.update(progress=round(fraction, 4)):
                raise _Superseded


def dataset_version_scan(*, version_id: int, task_id: str) -> str:
    """Measure a scanning version: size, file count, checksum, format and preview, with its
    progress written as it goes. Returns ``ready``, ``failed`` or ``skipped`` (no such
    scanning version, or another scan owns it). Runs outside any transaction."""
    rows = DatasetVersion.objects.filter(pk=version_id, state=State.SCANNING, task_id=task_id)
    version = rows.first()
    if version is None:
        return "skipped"
    try:
        result = scan(Path(version.path), _confinement_of(version), _ProgressWriter(rows))
        updated = rows.update(
            state=State.READY,
            progress=1.0,
            size_bytes=result.size_bytes,
            file_count=result.file_count,
            sha256=result.sha256,
            format=result.format,
            preview=result.preview,
            skipped=result.skipped,
            error="",
            scanned_at=timezone.now(),
        )
    except _Superseded:
        return "skipped"
    except ScanError as error:
        message = str(error)
    except Exception as error:
        logger.exception("the scan of dataset version %s failed", version_id)
        message = storable(f"The scan failed: {type(error).__name__}: {error}")
    else:
        return "ready" if updated else "skipped"
    rows.update(state=State.FAILED, error=message[:500], scanned_at=timezone.now())
    return "failed"
