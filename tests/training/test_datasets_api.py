"""The dataset API through the generic workspace-scoped tests, uploads, and what else the
generic tests do not cover."""

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from apps.accounts.models import User, Workspace
from apps.audit.models import AuditEntry
from apps.training.models import Dataset, DatasetVersion
from tests.api_base import (
    CLIENT_IP,
    BadInput,
    Operation,
    PaginatedListTests,
    WorkspaceScopedAPITests,
)
from tests.conftest import Cast
from tests.training.conftest import DatasetRoots, dataset_folder, dataset_make

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _roots(dataset_roots: DatasetRoots) -> None:
    """Every test here registers paths under the temporary dataset root."""


def _folder(workspace: Workspace, name: str) -> Path:
    return dataset_folder(Path(settings.PODIUM_DATASET_ROOTS[0]), workspace, name)


def _dataset(workspace: Workspace, name: str) -> Dataset:
    return dataset_make(Path(settings.PODIUM_DATASET_ROOTS[0]), workspace, name)


def _create(**fields: Any) -> Callable[[Workspace, Dataset], dict]:
    def payload(workspace: Workspace, dataset: Dataset) -> dict:
        path = str(_folder(workspace, "fresh"))
        return {"workspace_id": workspace.pk, "name": "fresh", "path": path, **fields}

    return payload


class TestDatasetAPI(WorkspaceScopedAPITests, PaginatedListTests):
    operations: ClassVar = [
        Operation("list", "get", lambda ws, d: f"/api/datasets?workspace_id={ws.pk}"),
        Operation("detail", "get", lambda ws, d: f"/api/datasets/{d.pk}"),
        Operation("version", "get", lambda ws, d: f"/api/datasets/{d.pk}/versions/1"),
        Operation(
            "create",
            "post",
            lambda ws, d: "/api/datasets",
            payload=_create(description="photos"),
            audit_action="dataset.create",
            status=201,
        ),
        Operation(
            "update",
            "patch",
            lambda ws, d: f"/api/datasets/{d.pk}",
            payload=lambda ws, d: {"description": "cats and dogs"},
            audit_action="dataset.update",
        ),
        Operation(
            "delete",
            "delete",
            lambda ws, d: f"/api/datasets/{d.pk}",
            audit_action="dataset.delete",
            status=204,
        ),
        Operation(
            "add version",
            "post",
            lambda ws, d: f"/api/datasets/{d.pk}/versions",
            payload=lambda ws, d: {"path": str(_folder(ws, "pets-v2")), "note": "more"},
            audit_action="dataset_version.create",
            status=201,
        ),
        Operation(
            "rescan",
            "post",
            lambda ws, d: f"/api/datasets/{d.pk}/versions/1/scan",
            audit_action="dataset_version.scan",
        ),
        Operation(
            "delete version",
            "delete",
            lambda ws, d: f"/api/datasets/{d.pk}/versions/1",
            audit_action="dataset_version.delete",
            status=204,
        ),
    ]
    bad_inputs: ClassVar = [
        BadInput("create", _create(path="../etc"), "path"),
        BadInput("create", _create(path="relative/dir"), "path"),
        BadInput("create", _create(path="/definitely/missing"), "path"),
        BadInput("create", _create(path="/etc"), "path"),
        BadInput(
            "create",
            lambda ws, d: {
                "workspace_id": ws.pk,
                "name": "x",
                "path": f"{d.versions.get().path}/../..",
            },
            "path",
        ),
        BadInput("create", lambda ws, d: {"workspace_id": ws.pk, "name": "x"}, "path"),
        BadInput("create", _create(name="two words"), "name"),
        BadInput("create", _create(name="pets"), "name"),
        BadInput("create", _create(description="x" * 2001), "description"),
        BadInput("create", _create(note="x" * 301), "note"),
        BadInput("update", lambda ws, d: {"description": "x" * 2001}, "description"),
        BadInput("add version", lambda ws, d: {"path": f"{d.versions.get().path}/../x"}, "path"),
        BadInput(
            "add version",
            lambda ws, d: {"path": str(settings.PODIUM_DATASET_UPLOAD_DIR)},
            "path",
        ),
    ]
    list_url = staticmethod(lambda ws: "/api/datasets")

    def make_object(self, workspace: Workspace) -> Dataset:
        settings.PODIUM_DATASET_UPLOAD_DIR.mkdir(parents=True, exist_ok=True)
        _dataset(workspace, "toys")
        return _dataset(workspace, "pets")

    def snapshot(self, workspace: Workspace) -> Any:
        datasets = Dataset.objects.filter(workspace=workspace)
        versions = DatasetVersion.objects.filter(dataset__workspace=workspace)
        return (
            sorted(datasets.values_list("pk", "name", "description", "last_version")),
            sorted(versions.values_list("pk", "version", "state", "task_id")),
        )


def test_the_detail_lists_versions_and_the_version_its_preview(
    cast: Cast, api_client: Callable[[User], Client], django_capture_on_commit_callbacks: Any
) -> None:
    client = api_client(cast.member)
    folder = _folder(cast.workspace, "notes")

    with django_capture_on_commit_callbacks(execute=True):
        created = client.post(
            "/api/datasets",
            {"workspace_id": cast.workspace.pk, "name": "notes", "path": str(folder)},
            content_type="application/json",
        )

    assert created.status_code == 201, created.content
    body = created.json()
    assert body["env_name"] == "PODIUM_DATASET_NOTES"
    assert body["versions"][0]["state"] == "scanning"
    detail = client.get(f"/api/datasets/{body['id']}").json()
    assert detail["latest"]["state"] == "ready"
    assert detail["versions"][0]["size_bytes"] == 6
    version = client.get(f"/api/datasets/{body['id']}/versions/1").json()
    assert version["preview"]["rows"] == [["hello"]]
    assert (
        version["sha256"]
        == hashlib.sha256(
            b"a.txt\0" + hashlib.sha256(b"hello\n").hexdigest().encode() + b"\n"
        ).hexdigest()
    )
    assert version["format"] == "text"
    assert client.get(f"/api/datasets/{body['id']}/versions/2").status_code == 404


def _upload(client: Client, url: str, data: dict[str, Any], content: bytes) -> Any:
    upload = SimpleUploadedFile("train.jsonl", content, content_type="application/x-ndjson")
    return client.post(url, {**data, "file": upload}, REMOTE_ADDR=CLIENT_IP)


def test_an_upload_creates_a_dataset_and_is_audited(
    cast: Cast,
    dataset_roots: DatasetRoots,
    api_client: Callable[[User], Client],
    django_capture_on_commit_callbacks: Any,
) -> None:
    client = api_client(cast.member)
    form = {"workspace_id": cast.workspace.pk, "name": "tiny", "note": "seed"}

    with django_capture_on_commit_callbacks(execute=True):
        response = _upload(client, "/api/datasets/upload", form, b'{"q": 1}\n')

    assert response.status_code == 201, response.content
    stored = dataset_roots.uploads / str(cast.workspace.pk) / "tiny" / "1" / "train.jsonl"
    assert response.json()["versions"][0]["path"] == str(stored)
    assert DatasetVersion.objects.get().state == "ready"
    entry = AuditEntry.objects.get(action__startswith="dataset")
    assert (entry.action, entry.actor, entry.ip) == ("dataset.create", cast.member, CLIENT_IP)

    dataset_id = response.json()["id"]
    with django_capture_on_commit_callbacks(execute=True):
        added = _upload(client, f"/api/datasets/{dataset_id}/versions/upload", {}, b'{"q": 2}\n')
    assert added.status_code == 201, added.content
    assert (added.json()["version"], added.json()["state"]) == (2, "scanning")
    scanned = client.get(f"/api/datasets/{dataset_id}/versions/2").json()
    assert scanned["preview"]["rows"] == [[2]]


@pytest.mark.parametrize(
    ("who", "status"), [("anonymous", 401), ("viewer", 403), ("outsider", 404)]
)
def test_uploads_are_refused_to_who_may_not_add(
    cast: Cast,
    dataset_roots: DatasetRoots,
    api_client: Callable[[User], Client],
    who: str,
    status: int,
) -> None:
    client = Client() if who == "anonymous" else api_client(getattr(cast, who))
    form = {"workspace_id": cast.workspace.pk, "name": "tiny"}

    response = _upload(client, "/api/datasets/upload", form, b"a\n")

    assert response.status_code == status
    assert not Dataset.objects.exists()
    assert not dataset_roots.uploads.exists() or not any(dataset_roots.uploads.rglob("*.jsonl"))


def test_an_upload_past_the_limit_is_refused_naming_the_file(
    cast: Cast, dataset_roots: DatasetRoots, api_client: Callable[[User], Client]
) -> None:
    form = {"workspace_id": cast.workspace.pk, "name": "big"}

    response = _upload(api_client(cast.member), "/api/datasets/upload", form, b"x" * (1 << 21))

    assert response.status_code == 400
    assert response.json()["field"] == "file"
    assert not Dataset.objects.exists()
    assert not AuditEntry.objects.filter(action__startswith="dataset").exists()


def test_a_missing_file_is_refused_naming_it(
    cast: Cast, api_client: Callable[[User], Client]
) -> None:
    response = api_client(cast.member).post(
        "/api/datasets/upload", {"workspace_id": cast.workspace.pk, "name": "x"}
    )

    assert response.status_code == 400
    assert response.json()["field"] == "file"


def test_the_list_filters_by_text_and_hides_other_workspaces(
    cast: Cast, api_client: Callable[[User], Client]
) -> None:
    _dataset(cast.workspace, "pets")
    _dataset(cast.workspace, "toys")
    _dataset(cast.other_workspace, "secret")
    client = api_client(cast.member)

    everything = client.get("/api/datasets").json()
    found = client.get("/api/datasets", {"q": "PET"}).json()
    foreign = client.get("/api/datasets", {"workspace_id": cast.other_workspace.pk})

    assert [d["name"] for d in everything["items"]] == ["pets", "toys"]
    assert [d["name"] for d in found["items"]] == ["pets"]
    assert found["items"][0]["latest"]["version"] == 1
    assert foreign.status_code == 404


def test_the_list_costs_the_same_queries_for_many_datasets(
    cast: Cast, api_client: Callable[[User], Client]
) -> None:
    client = api_client(cast.member)
    _dataset(cast.workspace, "first")

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/api/datasets").status_code == 200
        return len(captured)

    queries()
    few = queries()
    for n in range(8):
        dataset = _dataset(cast.workspace, f"more-{n}")
        DatasetVersion.objects.create(
            dataset=dataset, version=2, source="path", path="/x", task_id="t2"
        )
    assert queries() == few
