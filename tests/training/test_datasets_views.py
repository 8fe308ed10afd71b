"""Dataset pages: who sees them, the scanning progress they poll, and the forms that create,
upload, describe and delete."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from apps.scheduler.models import Job
from apps.training.models import Dataset, DatasetVersion
from apps.training.services.dataset_jobs import job_datasets_attach
from tests.conftest import Cast
from tests.pages import html
from tests.scheduler.factories import job_create, pool_create
from tests.training.conftest import DatasetRoots

pytestmark = pytest.mark.django_db

LIST = "/training/datasets/"


def test_the_list_shows_the_workspaces_datasets_and_their_newest_version(
    cast: Cast, make_dataset: Callable[..., Dataset], session_client: Callable[..., Client]
) -> None:
    pets = make_dataset(cast.workspace, "pets", versions=2)
    make_dataset(cast.other_workspace, "secret")

    page = html(session_client(cast.member).get(LIST))

    row = page[page.index(f'id="dataset-{pets.pk}"') :]
    row = row[: row.index("</tr>")]
    assert "v2" in row
    assert "dataset-ready" in row
    assert "6\xa0bytes" in row
    assert "secret" not in page
    assert 'id="dataset-new"' in page


def test_viewers_are_not_offered_to_create(
    cast: Cast, make_dataset: Callable[..., Dataset], session_client: Callable[..., Client]
) -> None:
    dataset = make_dataset(cast.workspace)
    client = session_client(cast.viewer)

    listed = html(client.get(LIST))
    detail = html(client.get(f"{LIST}{dataset.pk}/"))

    assert 'id="dataset-new"' not in listed
    assert "hello" in detail
    assert 'id="dataset-delete"' not in detail
    assert 'id="version-new"' not in detail
    assert client.get(f"{LIST}new/").status_code == 200
    assert "only a viewer" in html(client.get(f"{LIST}new/"))


def test_another_workspaces_dataset_is_not_found(
    cast: Cast, make_dataset: Callable[..., Dataset], session_client: Callable[..., Client]
) -> None:
    foreign = make_dataset(cast.other_workspace, "secret")
    client = session_client(cast.member)

    for url in (
        f"{LIST}{foreign.pk}/",
        f"{LIST}{foreign.pk}/state/",
        f"{LIST}{foreign.pk}/versions/new/",
    ):
        assert client.get(url).status_code == 404, url
    assert client.post(f"{LIST}{foreign.pk}/delete/").status_code == 404
    assert client.post(f"{LIST}{foreign.pk}/versions/1/delete/").status_code == 404
    assert Dataset.objects.filter(pk=foreign.pk).exists()


def test_the_detail_shows_the_preview_and_polls_only_while_scanning(
    cast: Cast, make_dataset: Callable[..., Dataset], session_client: Callable[..., Client]
) -> None:
    dataset = make_dataset(cast.workspace, versions=2)
    client = session_client(cast.member)

    ready = html(client.get(f"{LIST}{dataset.pk}/"))
    DatasetVersion.objects.filter(dataset=dataset, version=2).update(
        state=DatasetVersion.State.SCANNING, progress=0.42
    )
    scanning = html(client.get(f"{LIST}{dataset.pk}/state/", HTTP_HX_REQUEST="true"))

    assert 'id="dataset-preview"' in ready
    assert "<td>hello</td>" in ready
    assert "PODIUM_DATASET_PETS" in ready
    assert 'hx-trigger="every 1s"' not in ready
    assert 'id="dataset-state"' in scanning
    assert 'hx-trigger="every 1s"' in scanning
    assert "42%" in scanning
    assert "<html" not in scanning


def test_a_path_registered_on_the_page_is_scanned(
    cast: Cast,
    dataset_roots: DatasetRoots,
    session_client: Callable[..., Client],
    django_capture_on_commit_callbacks: Any,
) -> None:
    folder = dataset_roots.shared / "faces"
    folder.mkdir()
    (folder / "labels.csv").write_text("file,label\n1.png,cat\n")
    client = session_client(cast.member)
    form = {"workspace": cast.workspace.pk, "name": "faces", "path": str(folder)}

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"{LIST}new/", form)

    dataset = Dataset.objects.get(name="faces")
    assert response.status_code == 302
    assert response["Location"] == f"{LIST}{dataset.pk}/"
    page = html(client.get(response["Location"]))
    assert "<th>label</th>" in page
    assert "<td>cat</td>" in page


def test_a_refused_path_is_shown_on_its_field(
    cast: Cast, dataset_roots: DatasetRoots, session_client: Callable[..., Client]
) -> None:
    form = {"workspace": cast.workspace.pk, "name": "etc", "path": "/etc"}

    response = session_client(cast.member).post(f"{LIST}new/", form)

    assert response.status_code == 400
    assert "outside the dataset roots" in html(response)
    assert not Dataset.objects.exists()


def test_a_file_uploaded_on_the_page_becomes_a_version(
    cast: Cast,
    make_dataset: Callable[..., Dataset],
    dataset_roots: DatasetRoots,
    session_client: Callable[..., Client],
) -> None:
    dataset = make_dataset(cast.workspace)
    upload = SimpleUploadedFile("more.txt", b"more\n")

    response = session_client(cast.member).post(
        f"{LIST}{dataset.pk}/versions/new/", {"file": upload, "note": "added"}
    )

    assert response.status_code == 302
    assert response["Location"] == f"{LIST}{dataset.pk}/?version=2"
    version = dataset.versions.get(version=2)
    assert Path(version.path) == dataset_roots.uploads / str(cast.workspace.pk) / "pets/2/more.txt"


def test_an_upload_declared_too_large_is_refused_before_it_is_read(
    cast: Cast,
    make_dataset: Callable[..., Dataset],
    dataset_roots: DatasetRoots,
    session_client: Callable[..., Client],
) -> None:
    dataset = make_dataset(cast.workspace)
    client = session_client(cast.member)
    upload = SimpleUploadedFile("big.bin", b"x" * (2 << 20))

    response = client.post(f"{LIST}{dataset.pk}/versions/new/", {"file": upload}, follow=True)

    assert response.redirect_chain == [(f"{LIST}{dataset.pk}/versions/new/", 302)]
    assert "larger than the upload limit of 1 MB" in html(response)
    assert dataset.versions.count() == 1
    assert not dataset_roots.uploads.exists()


def test_the_upload_forms_check_csrf(
    cast: Cast, dataset_roots: DatasetRoots, session_client: Callable[..., Client]
) -> None:
    client = session_client(cast.member, csrf=True)
    form = {"workspace": cast.workspace.pk, "name": "x", "path": str(dataset_roots.shared)}

    assert client.post(f"{LIST}new/", form).status_code == 403
    assert not Dataset.objects.exists()


def test_a_dataset_an_unfinished_job_reads_stays(
    cast: Cast, make_dataset: Callable[..., Dataset], session_client: Callable[..., Client]
) -> None:
    dataset = make_dataset(cast.workspace)
    job = job_create(cast.workspace, pool_create("a100"), state=Job.State.RUNNING)
    job_datasets_attach(job=job, refs=["pets"], actor=cast.member)
    client = session_client(cast.member)

    kept = client.post(f"{LIST}{dataset.pk}/delete/", follow=True)
    Job.objects.filter(pk=job.pk).update(state=Job.State.CANCELLED)
    gone = client.post(f"{LIST}{dataset.pk}/delete/")

    assert f"Job {job.pk} (train) reads pets@1" in html(kept)
    assert f'href="/scheduler/jobs/{job.pk}/"' in html(kept)
    assert gone.status_code == 302
    assert gone["Location"] == LIST
    assert not Dataset.objects.exists()


def test_the_description_is_saved_from_the_page(
    cast: Cast, make_dataset: Callable[..., Dataset], session_client: Callable[..., Client]
) -> None:
    dataset = make_dataset(cast.workspace)

    response = session_client(cast.member).post(
        f"{LIST}{dataset.pk}/edit/", {"description": "Pets of the team"}
    )

    dataset.refresh_from_db()
    assert response.status_code == 302
    assert dataset.description == "Pets of the team"


def test_pages_cost_the_same_queries_for_many_datasets_and_versions(
    cast: Cast, make_dataset: Callable[..., Dataset], session_client: Callable[..., Client]
) -> None:
    first = make_dataset(cast.workspace, "first")
    client = session_client(cast.member)

    def queries(url: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url).status_code == 200
        return len(captured)

    queries(LIST)
    few = (queries(LIST), queries(f"{LIST}{first.pk}/"))
    for n in range(10):
        make_dataset(cast.workspace, f"more-{n}", versions=3)
    Dataset.objects.filter(pk=first.pk).delete()
    many = make_dataset(cast.workspace, "first", versions=6)

    assert (queries(LIST), queries(f"{LIST}{many.pk}/")) == few
