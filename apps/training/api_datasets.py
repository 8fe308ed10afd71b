"""REST endpoints of datasets and their versions (under ``/api/datasets``).

A dataset is created, and a version added, from a path on shared storage (JSON) or an
uploaded file (multipart, the ``/upload`` routes). Versions are scanned in the
background: poll a version until its ``state`` leaves ``scanning``.
"""

from typing import Any

from django.http import HttpRequest
from ninja import File, Form, Query, Router, Status
from ninja.files import UploadedFile
from ninja.pagination import LimitOffsetPagination, paginate

from apps.accounts.selectors import User, workspace_get
from apps.system.errors import ApplicationError
from apps.system.pages import api_user
from apps.training.models import Dataset, DatasetVersion
from apps.training.schemas_datasets import (
    DatasetDetailOut,
    DatasetFilterIn,
    DatasetIn,
    DatasetOut,
    DatasetPatch,
    DatasetUploadIn,
    VersionDetailOut,
    VersionIn,
    VersionUploadIn,
)
from apps.training.selectors import datasets as selectors
from apps.training.services import datasets as services

datasets_router = Router(tags=["datasets"])

# Stored fields the version output reads straight from the row.
VERSION_FIELDS = (
    "version", "source", "path", "state", "progress", "error", "size_bytes", "file_count",
    "sha256", "format", "skipped", "note", "created_at", "scanned_at",
)  # fmt: skip


def dataset_out(dataset: Dataset) -> dict[str, Any]:
    """A dataset of ``selectors.dataset_list`` as the API shows it."""
    latest = None
    if getattr(dataset, "latest_version", None) is not None:
        latest = {name: getattr(dataset, f"latest_{name}") for name in selectors.LATEST_FIELDS}
    return {
        "id": dataset.pk,
        "workspace_id": dataset.workspace_id,
        "workspace": dataset.workspace.name,
        "name": dataset.name,
        "description": dataset.description,
        "env_name": selectors.dataset_env_name(dataset.name),
        "created_by": dataset.created_by.get_username() if dataset.created_by else None,
        "created_at": dataset.created_at,
        "version_count": getattr(dataset, "version_count", 0),
        "latest": latest,
    }


def version_out(version: DatasetVersion) -> dict[str, Any]:
    """A version as the API lists it (without its preview)."""
    return {
        **{name: getattr(version, name) for name in VERSION_FIELDS},
        "created_by": version.created_by.get_username() if version.created_by else None,
    }


def _version_detail(version: DatasetVersion) -> dict[str, Any]:
    return {
        **version_out(version),
        "dataset_id": version.dataset.pk,
        "dataset": version.dataset.name,
        "preview": version.preview,
    }


def _dataset_detail(user: User, dataset_id: int) -> dict[str, Any]:
    dataset = selectors.dataset_get(user=user, dataset_id=dataset_id)
    versions = selectors.dataset_versions(dataset=dataset)
    return {**dataset_out(dataset), "versions": [version_out(v) for v in versions]}


def _required(file: UploadedFile | None) -> UploadedFile:
    if file is None:
        raise ApplicationError("Choose a file to upload.", field="file")
    return file


def _created(
    user: User, payload: DatasetIn | DatasetUploadIn, source: services.DatasetSource
) -> Any:
    """A new dataset of the payload's workspace whose version 1 is ``source``, as a 201."""
    dataset = services.dataset_create(
        actor=user,
        workspace=workspace_get(user=user, workspace_id=payload.workspace_id),
        name=payload.name,
        description=payload.description,
        source=source,
    )
    return Status(201, _dataset_detail(user, dataset.pk))


class DatasetPagination(LimitOffsetPagination):
    """Limit/offset pages of datasets, shaped for the API a page at a time."""

    def paginate_queryset(
        self, queryset: Any, pagination: Any, request: HttpRequest, **params: Any
    ) -> Any:
        page = super().paginate_queryset(queryset, pagination, request, **params)
        page[self.items_attribute] = [dataset_out(d) for d in page[self.items_attribute]]
        return page


@datasets_router.get("", response=list[DatasetOut])
@paginate(DatasetPagination)
def dataset_list(request: HttpRequest, filters: Query[DatasetFilterIn]) -> Any:
    """Datasets of your workspaces, by workspace and name, with their newest version."""
    user = api_user(request)
    workspace_id = None
    if filters.workspace_id is not None:
        workspace_id = workspace_get(user=user, workspace_id=filters.workspace_id).pk
    return selectors.dataset_list(
        user=user,
        filters=selectors.DatasetFilter(workspace_id=workspace_id, q=(filters.q or "").strip()),
    )


@datasets_router.post("", response={201: DatasetDetailOut})
def dataset_create(request: HttpRequest, payload: DatasetIn) -> Any:
    """Register a path on shared storage as a new dataset (members and workspace admins);
    its version 1 is scanned in the background."""
    source = services.DatasetSource(path=payload.path, note=payload.note)
    return _created(api_user(request), payload, source)


@datasets_router.post("/upload", response={201: DatasetDetailOut})
def dataset_upload(
    request: HttpRequest, payload: Form[DatasetUploadIn], file: File[UploadedFile | None] = None
) -> Any:
    """Upload a file as a new dataset (multipart form: ``workspace_id``, ``name``,
    ``description``, ``note`` and ``file``), up to the configured size."""
    source = services.DatasetSource(upload=_required(file), note=payload.note)
    return _created(api_user(request), payload, source)


@datasets_router.get("/{int:dataset_id}", response=DatasetDetailOut)
def dataset_detail(request: HttpRequest, dataset_id: int) -> Any:
    """One dataset and all its versions, newest first (previews: see the version)."""
    return _dataset_detail(api_user(request), dataset_id)


@datasets_router.patch("/{int:dataset_id}", response=DatasetDetailOut)
def dataset_update(request: HttpRequest, dataset_id: int, payload: DatasetPatch) -> Any:
    """Change a dataset's description."""
    user = api_user(request)
    dataset = selectors.dataset_get(user=user, dataset_id=dataset_id)
    services.dataset_update(actor=user, dataset=dataset, description=payload.description)
    return _dataset_detail(user, dataset_id)


@datasets_router.delete("/{int:dataset_id}", response={204: None})
def dataset_delete(request: HttpRequest, dataset_id: int) -> Any:
    """Delete a dataset and its versions (uploaded files too), unless an unfinished job
    reads one of them (409)."""
    user = api_user(request)
    services.dataset_delete(
        actor=user, dataset=selectors.dataset_get(user=user, dataset_id=dataset_id)
    )
    return Status(204, None)


@datasets_router.post("/{int:dataset_id}/versions", response={201: VersionDetailOut})
def version_create(request: HttpRequest, dataset_id: int, payload: VersionIn) -> Any:
    """Add a version from a path on shared storage; it is scanned in the background."""
    user = api_user(request)
    dataset = selectors.dataset_get(user=user, dataset_id=dataset_id)
    version = services.dataset_version_add(
        actor=user,
        dataset=dataset,
        source=services.DatasetSource(path=payload.path, note=payload.note),
    )
    return Status(201, _version_detail(version))


@datasets_router.post("/{int:dataset_id}/versions/upload", response={201: VersionDetailOut})
def version_upload(
    request: HttpRequest,
    dataset_id: int,
    payload: Form[VersionUploadIn],
    file: File[UploadedFile | None] = None,
) -> Any:
    """Add a version from an uploaded file (multipart form: ``note`` and ``file``)."""
    user = api_user(request)
    dataset = selectors.dataset_get(user=user, dataset_id=dataset_id)
    version = services.dataset_version_add(
        actor=user,
        dataset=dataset,
        source=services.DatasetSource(upload=_required(file), note=payload.note),
    )
    return Status(201, _version_detail(version))


def _version(request: HttpRequest, dataset_id: int, version: int) -> DatasetVersion:
    dataset = selectors.dataset_get(user=api_user(request), dataset_id=dataset_id)
    return selectors.dataset_version_get(dataset=dataset, version=version)


@datasets_router.get("/{int:dataset_id}/versions/{int:version}", response=VersionDetailOut)
def version_detail(request: HttpRequest, dataset_id: int, version: int) -> Any:
    """One version: what its scan found, its progress while scanning, and its first
    records."""
    return _version_detail(_version(request, dataset_id, version))


@datasets_router.post("/{int:dataset_id}/versions/{int:version}/scan", response=VersionDetailOut)
def version_rescan(request: HttpRequest, dataset_id: int, version: int) -> Any:
    """Scan a version again: its files changed, or its scan failed."""
    found = _version(request, dataset_id, version)
    return _version_detail(services.dataset_version_rescan(actor=api_user(request), version=found))


@datasets_router.delete("/{int:dataset_id}/versions/{int:version}", response={204: None})
def version_delete(request: HttpRequest, dataset_id: int, version: int) -> Any:
    """Delete a version (an uploaded file too), unless an unfinished job reads it (409).
    Its number is never given again."""
    found = _version(request, dataset_id, version)
    services.dataset_version_delete(actor=api_user(request), version=found)
    return Status(204, None)
