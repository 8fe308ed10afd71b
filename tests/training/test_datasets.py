"""Datasets: what a scan finds in each format, which paths are refused, versions and their
files on disk, and the datasets jobs read."""

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.audit.models import AuditEntry
from apps.scheduler.models import Job, Pool
from apps.system.errors import ApplicationError, ConflictError, PermissionDeniedError
from apps.training.datasets.confinement import Confinement
from apps.training.datasets.scan import scan
from apps.training.datasets.uploads import file_name_clean
from apps.training.models import Dataset, DatasetVersion, JobDataset
from apps.training.services import datasets as dataset_services
from apps.training.services.dataset_jobs import datasets_launch_env, job_datasets_attach
from apps.training.services.datasets import (
    DatasetSource,
    dataset_create,
    dataset_delete,
    dataset_version_add,
    dataset_version_delete,
    dataset_version_rescan,
    dataset_version_scan,
)
from tests.conftest import Cast
from tests.scheduler.factories import job_create
from tests.training.conftest import DatasetRoots

State = DatasetVersion.State


def _scan(path: Path, root: Path | None = None) -> Any:
    return scan(path, Confinement(((root or path.parent).resolve(),)))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Scans of each format ----------------------------------------------------------------------


def test_a_text_file_previews_its_first_twenty_lines(tmp_path: Path) -> None:
    data = "".join(f"line {n}\n" for n in range(50)).encode()
    (tmp_path / "notes.txt").write_bytes(data)

    result = _scan(tmp_path / "notes.txt")

    assert (result.size_bytes, result.file_count, result.format) == (len(data), 1, "text")
    assert result.sha256 == _sha(data)
    assert result.preview["columns"] == ["line"]
    assert result.preview["rows"] == [[f"line {n}"] for n in range(20)]
    assert result.preview["file"] == "notes.txt"


def test_json_lines_become_columns_of_their_keys(tmp_path: Path) -> None:
    records = [{"text": "a", "label": 1}, {"text": "b", "extra": [1, 2]}, {"label": None}]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")

    result = _scan(path)

    assert result.format == "jsonl"
    assert result.preview["columns"] == ["text", "label", "extra"]
    assert result.preview["rows"] == [["a", 1, None], ["b", None, "[1, 2]"], [None, None, None]]


def test_json_lines_are_recognised_without_their_extension(tmp_path: Path) -> None:
    path = tmp_path / "part-0000"
    path.write_text('{"q": "why"}\n{"q": "how"}\n')

    assert _scan(path).format == "jsonl"


def test_a_json_lines_file_with_a_broken_line_says_which(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n{"a": \n')

    preview = _scan(path).preview

    assert preview["rows"] == [[1]]
    assert preview["problem"] == "Line 2 is not valid JSON."


def test_csv_has_its_header_as_columns(tmp_path: Path) -> None:
    path = tmp_path / "scores.csv"
    path.write_text('name,score\n"Smith, J",3.5\nLee,4\n' + "x,1\n" * 30)

    result = _scan(path)

    assert result.format == "csv"
    assert result.preview["columns"] == ["name", "score"]
    assert result.preview["rows"][:2] == [["Smith, J", "3.5"], ["Lee", "4"]]
    assert len(result.preview["rows"]) == 20


def test_tsv_is_read_with_tabs(tmp_path: Path) -> None:
    path = tmp_path / "pairs.tsv"
    path.write_text("src\ttgt\nhallo\thello\n")

    assert _scan(path).preview["rows"] == [["hallo", "hello"]]


def test_parquet_previews_its_first_rows_with_types(tmp_path: Path) -> None:
    path = tmp_path / "table.parquet"
    table = pa.table(
        {
            "id": list(range(100)),
            "score": [float("nan"), *[n / 2 for n in range(99)]],
            "text": [f"row {n}" for n in range(100)],
            "blob": [b"\x00\x01"] * 100,
        }
    )
    pq.write_table(table, path, row_group_size=30)

    result = _scan(path)

    assert result.format == "parquet"
    assert result.preview["columns"] == ["id", "score", "text", "blob"]
    assert result.preview["types"] == ["int64", "double", "string", "binary"]
    assert result.preview["total_rows"] == 100
    assert len(result.preview["rows"]) == 20
    assert result.preview["rows"][0] == [0, "nan", "row 0", "<2 bytes>"]
    assert result.preview["rows"][19][0] == 19


def test_a_file_named_parquet_that_is_not_one_is_unknown(tmp_path: Path) -> None:
    path = tmp_path / "fake.parquet"
    path.write_text("not parquet\n")

    result = _scan(path)

    assert (result.format, result.preview) == ("unknown", {})


def test_binary_data_is_unknown_and_has_no_preview(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(bytes(range(256)) * 10)

    result = _scan(path)

    assert (result.format, result.preview) == ("unknown", {})


def test_a_very_long_line_is_cut_in_the_preview(tmp_path: Path) -> None:
    path = tmp_path / "long.txt"
    path.write_text("x" * 300_000 + "\nsecond\n")

    rows = _scan(path).preview["rows"]

    assert len(rows[0][0]) == 200
    assert rows[0][0].endswith("…")
    assert rows[1] == ["second"]


def test_a_directory_has_a_combined_digest_over_sorted_paths(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    (root / "b").mkdir(parents=True)
    files = {"z.txt": b"last\n", "b/a.txt": b"first\n", "a.txt": b"middle\n"}
    for relative, data in files.items():
        (root / relative).write_bytes(data)
    (root / "_SUCCESS").write_bytes(b"")

    result = _scan(root)

    lines = "".join(f"{rel}\0{_sha(files.get(rel, b''))}\n" for rel in sorted([*files, "_SUCCESS"]))
    assert result.sha256 == _sha(lines.encode())
    assert (result.file_count, result.size_bytes, result.format) == (4, 18, "text")
    assert result.preview["file"] == "a.txt"


def test_a_directory_of_several_formats_is_mixed_and_previews_the_largest(
    tmp_path: Path,
) -> None:
    root = tmp_path / "mixed"
    root.mkdir()
    (root / "README.md").write_text("about\n")
    pq.write_table(pa.table({"x": list(range(1000))}), root / "data.parquet")

    result = _scan(root)

    assert result.format == "mixed"
    assert result.preview["format"] == "parquet"
    assert result.preview["formats"] == {"parquet": 1, "text": 1}


def test_links_leaving_the_roots_and_special_files_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "root"
    data = root / "data"
    data.mkdir(parents=True)
    secret = tmp_path / "secret.txt"
    secret.write_text("password\n")
    (data / "kept.txt").write_text("ok\n")
    (data / "inside.txt").symlink_to(data / "kept.txt")
    (data / "escape.txt").symlink_to(secret)
    (data / "dir-link").symlink_to(tmp_path)
    os.mkfifo(data / "pipe")

    result = scan(data, Confinement((root.resolve(),)))

    assert result.file_count == 2
    assert result.skipped == 3
    assert "password" not in json.dumps(result.preview)


def test_progress_rises_to_one(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_bytes(b"0123456789abcde\n" * 300_000)
    seen: list[float] = []

    scan(path, Confinement((tmp_path.resolve(),)), seen.append)

    assert len(seen) > 3
    assert seen == sorted(seen)
    assert seen[-1] == 1.0


# Paths -------------------------------------------------------------------------------------


def _register(cast: Cast, path: str, name: str = "pets") -> Dataset:
    return dataset_create(
        actor=cast.member, workspace=cast.workspace, name=name, source=DatasetSource(path=path)
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "Give either a path"),
        ("data/pets", "must be absolute"),
        ("/x/\x00/y", "NUL"),
        ("{shared}/pets/../../outside", "'..'"),
        ("{shared}/missing", "Nothing exists"),
        ("{outside}", "outside the dataset roots"),
        ("/etc/passwd", "outside the dataset roots"),
        ("{shared}/escape", "resolves to"),
        ("{shared}/uploads/1", "upload area"),
        ("{shared}/fifo", "neither a regular file nor a directory"),
    ],
)
def test_paths_outside_the_roots_or_malformed_are_refused(
    cast: Cast, dataset_roots: DatasetRoots, path: str, message: str
) -> None:
    (dataset_roots.shared / "pets").mkdir()
    (dataset_roots.uploads / "1").mkdir(parents=True)
    (dataset_roots.shared / "escape").symlink_to(dataset_roots.outside)
    os.mkfifo(dataset_roots.shared / "fifo")
    path = path.format(shared=dataset_roots.shared, outside=dataset_roots.outside)

    with pytest.raises(ApplicationError) as refused:
        _register(cast, path)

    assert refused.value.field == "path"
    assert message in refused.value.message
    assert not Dataset.objects.exists()
    assert not AuditEntry.objects.exists()


@pytest.mark.django_db
def test_a_symlink_inside_the_roots_is_stored_resolved(
    cast: Cast, dataset_roots: DatasetRoots
) -> None:
    (dataset_roots.shared / "v2").mkdir()
    (dataset_roots.shared / "current").symlink_to(dataset_roots.shared / "v2")

    dataset = _register(cast, f"{dataset_roots.shared}/current/")

    assert dataset.versions.get().path == str(dataset_roots.shared / "v2")


@pytest.mark.django_db
def test_viewers_cannot_create_datasets(cast: Cast, dataset_roots: DatasetRoots) -> None:
    with pytest.raises(PermissionDeniedError):
        dataset_create(
            actor=cast.viewer,
            workspace=cast.workspace,
            name="pets",
            source=DatasetSource(path=str(dataset_roots.shared)),
        )


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["", "has space", "-dash-first", "a@1", "x" * 65, "a/b"])
def test_names_jobs_cannot_refer_to_are_refused(
    cast: Cast, dataset_roots: DatasetRoots, name: str
) -> None:
    with pytest.raises(ApplicationError) as refused:
        _register(cast, str(dataset_roots.shared), name=name)

    assert refused.value.field == "name"


# Versions and scans ------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_registered_path_is_scanned_after_commit(
    cast: Cast, dataset_roots: DatasetRoots, django_capture_on_commit_callbacks: Any
) -> None:
    folder = dataset_roots.shared / "reviews"
    folder.mkdir()
    (folder / "train.csv").write_text("text,stars\ngood,5\nbad,1\n")

    with django_capture_on_commit_callbacks(execute=True):
        dataset = _register(cast, str(folder), name="reviews")

    version = dataset.versions.get()
    assert version.state == State.READY
    assert (version.version, version.source, version.progress) == (1, "path", 1.0)
    assert (version.size_bytes, version.file_count, version.format) == (24, 1, "csv")
    assert version.preview["rows"] == [["good", "5"], ["bad", "1"]]
    assert version.scanned_at is not None
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.actor, entry.workspace) == (
        "dataset.create",
        cast.member,
        cast.workspace,
    )


def _upload(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/octet-stream")


@pytest.mark.django_db
def test_an_upload_is_stored_under_its_workspace_name_and_version(
    cast: Cast, dataset_roots: DatasetRoots, django_capture_on_commit_callbacks: Any
) -> None:
    data = b'{"a": 1}\n'
    with django_capture_on_commit_callbacks(execute=True):
        dataset = dataset_create(
            actor=cast.member,
            workspace=cast.workspace,
            name="tiny",
            source=DatasetSource(upload=_upload("../../my data.jsonl", data), note="first"),
        )

    version = dataset.versions.get()
    expected = dataset_roots.uploads / str(cast.workspace.pk) / "tiny" / "1" / "my_data.jsonl"
    assert version.path == str(expected)
    assert expected.read_bytes() == data
    assert (version.source, version.state, version.format, version.note) == (
        "upload",
        State.READY,
        "jsonl",
        "first",
    )
    assert version.sha256 == _sha(data)
    assert list((dataset_roots.uploads / ".incoming").iterdir()) == []


@pytest.mark.django_db
def test_an_upload_past_the_limit_leaves_nothing_behind(
    cast: Cast, dataset_roots: DatasetRoots
) -> None:
    big = _upload("big.txt", b"x" * (1024 * 1024 + 1))
    big.size = None  # as if the client did not say: counted while streaming

    with pytest.raises(ApplicationError) as refused:
        dataset_create(
            actor=cast.member,
            workspace=cast.workspace,
            name="big",
            source=DatasetSource(upload=big),
        )

    assert refused.value.field == "file"
    assert "1 MB" in refused.value.message
    assert not Dataset.objects.exists()
    assert list((dataset_roots.uploads / ".incoming").iterdir()) == []


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("C:\\Users\\me\\train.csv", "train.csv"),
        ("../../etc/passwd", "passwd"),
        (".hidden", "hidden"),
        ("a b;rm -rf.txt", "a_b_rm_-rf.txt"),
        ("", "upload"),
        ("données.csv", "données.csv"),
        ("x" * 300 + ".parquet", "x" * 192 + ".parquet"),
    ],
)
def test_upload_names_are_made_safe(raw: str, clean: str) -> None:
    assert file_name_clean(raw) == clean


@pytest.mark.django_db
def test_version_numbers_are_never_given_twice(
    cast: Cast, make_dataset: Callable[..., Dataset], dataset_roots: DatasetRoots
) -> None:
    dataset = make_dataset(cast.workspace, versions=2)
    dataset_version_delete(actor=cast.member, version=dataset.versions.get(version=2))

    added = dataset_version_add(
        actor=cast.member, dataset=dataset, source=DatasetSource(path=str(dataset_roots.shared))
    )

    assert added.version == 3
    assert added.state == State.SCANNING


@pytest.mark.django_db
def test_a_scan_of_a_vanished_path_fails_with_the_reason(
    cast: Cast, make_dataset: Callable[..., Dataset], dataset_roots: DatasetRoots
) -> None:
    version = make_dataset(cast.workspace).versions.get()
    dataset_version_rescan(actor=cast.member, version=version)
    (Path(version.path) / "a.txt").unlink()
    Path(version.path).rmdir()

    assert dataset_version_scan(version_id=version.pk, task_id=version.task_id) == "failed"

    version.refresh_from_db()
    assert version.state == State.FAILED
    assert "disappeared" in version.error


@pytest.mark.django_db
def test_a_superseded_scan_changes_nothing(
    cast: Cast, make_dataset: Callable[..., Dataset]
) -> None:
    version = make_dataset(cast.workspace).versions.get()
    dataset_version_rescan(actor=cast.member, version=version)
    old_task = version.task_id
    dataset_version_rescan(actor=cast.member, version=version)

    assert dataset_version_scan(version_id=version.pk, task_id=old_task) == "skipped"
    assert dataset_version_scan(version_id=version.pk, task_id=version.task_id) == "ready"
    assert dataset_version_scan(version_id=version.pk, task_id=version.task_id) == "skipped"


# Jobs --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_dataset_read_by_an_unfinished_job_cannot_be_deleted(
    cast: Cast, make_dataset: Callable[..., Dataset], pool: Pool
) -> None:
    dataset = make_dataset(cast.workspace, versions=2)
    job = job_create(cast.workspace, pool, state=Job.State.RUNNING)
    job_datasets_attach(job=job, refs=["pets@1"], actor=cast.member)

    with pytest.raises(ConflictError, match=f"Job {job.pk}"):
        dataset_delete(actor=cast.member, dataset=dataset)
    with pytest.raises(ConflictError, match="pets@1"):
        dataset_version_delete(actor=cast.member, version=dataset.versions.get(version=1))
    dataset_version_delete(actor=cast.member, version=dataset.versions.get(version=2))

    Job.objects.filter(pk=job.pk).update(state=Job.State.SUCCEEDED)
    dataset_delete(actor=cast.member, dataset=dataset)

    use = JobDataset.objects.get(job=job)
    assert (use.version, use.ref) == (None, "pets@1")


@pytest.mark.django_db
def test_uploaded_files_go_once_the_delete_commits(
    cast: Cast, dataset_roots: DatasetRoots, django_capture_on_commit_callbacks: Any
) -> None:
    dataset = dataset_create(
        actor=cast.member,
        workspace=cast.workspace,
        name="tiny",
        source=DatasetSource(upload=_upload("a.txt", b"a\n")),
    )
    stored = Path(dataset.versions.get().path)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        dataset_delete(actor=cast.member, dataset=dataset)
    assert stored.exists()
    for callback in callbacks:
        callback()

    assert not stored.exists()
    assert not (dataset_roots.uploads / str(cast.workspace.pk)).exists()
    assert dataset_roots.uploads.exists()


@pytest.mark.django_db
def test_jobs_get_the_newest_ready_version_or_the_one_named(
    cast: Cast, make_dataset: Callable[..., Dataset], pool: Pool
) -> None:
    pets = make_dataset(cast.workspace, "pets", versions=3)
    pets.versions.filter(version=3).update(state=State.SCANNING)
    toys = make_dataset(cast.workspace, "toy-set.v2", versions=2)
    job = job_create(cast.workspace, pool)

    attached = job_datasets_attach(job=job, refs=["pets", " toy-set.v2@1 "], actor=cast.member)

    assert [(a.ref, a.env_name) for a in attached] == [
        ("pets@2", "PODIUM_DATASET_PETS"),
        ("toy-set.v2@1", "PODIUM_DATASET_TOY_SET_V2"),
    ]
    assert attached[1].version == toys.versions.get(version=1)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("refs", "message"),
    [
        (["nothing"], "no dataset named nothing"),
        (["pets@9"], "has no such version"),
        (["pets@3"], "still being scanned"),
        (["pets@4"], "failed its scan"),
        (["fresh"], "no ready version yet"),
        (["pets", "pets@1"], "pets is named twice"),
        (["my-set", "my_set"], "my-set and my_set clash"),
        (["pets@0"], "is not a dataset reference"),
        (["pets@"], "is not a dataset reference"),
        (["secret"], "no dataset named secret"),
        ("pets", "must be a list"),
    ],
)
def test_refs_that_cannot_be_read_refuse_the_submit(
    cast: Cast,
    make_dataset: Callable[..., Dataset],
    pool: Pool,
    refs: Any,
    message: str,
) -> None:
    pets = make_dataset(cast.workspace, "pets", versions=4)
    pets.versions.filter(version=3).update(state=State.SCANNING)
    pets.versions.filter(version=4).update(state=State.FAILED, error="gone")
    make_dataset(cast.workspace, "fresh", state=State.SCANNING)
    make_dataset(cast.workspace, "my-set")
    make_dataset(cast.workspace, "my_set")
    make_dataset(cast.other_workspace, "secret")
    job = job_create(cast.workspace, pool)

    with pytest.raises(ApplicationError) as refused:
        job_datasets_attach(job=job, refs=refs, actor=cast.member)

    assert refused.value.field == "datasets"
    assert message in refused.value.message
    assert not JobDataset.objects.exists()


@pytest.mark.django_db
def test_launches_get_every_jobs_dataset_paths_in_one_query(
    cast: Cast,
    make_dataset: Callable[..., Dataset],
    pool: Pool,
    django_assert_num_queries: Any,
) -> None:
    pets = make_dataset(cast.workspace, "pets")
    make_dataset(cast.workspace, "toys")
    first, second, bare = (job_create(cast.workspace, pool) for _ in range(3))
    job_datasets_attach(job=first, refs=["pets", "toys"], actor=cast.member)
    job_datasets_attach(job=second, refs=["pets@1"], actor=cast.member)

    with django_assert_num_queries(1):
        env = datasets_launch_env([first.pk, second.pk, bare.pk])

    path = pets.versions.get().path
    assert env[first.pk] == {
        "PODIUM_DATASET_PETS": path,
        "PODIUM_DATASET_TOYS": path.replace("-pets", "-toys"),
    }
    assert env[second.pk] == {"PODIUM_DATASET_PETS": path}
    assert env[bare.pk] == {}


@pytest.mark.django_db
def test_what_databases_refuse_is_kept_out_of_the_stored_scan(
    cast: Cast, dataset_roots: DatasetRoots, django_capture_on_commit_callbacks: Any
) -> None:
    folder = dataset_roots.shared / "odd"
    folder.mkdir()
    name = os.fsdecode(b"caf\xe9.jsonl")  # not UTF-8: a lone surrogate once decoded
    (folder / name).write_text('{"k\\u0000": "a\\u0000b", "s": "\\ud800"}\n')

    with django_capture_on_commit_callbacks(execute=True):
        dataset = _register(cast, str(folder), name="odd")

    version = dataset.versions.get()
    assert version.state == State.READY, version.error
    assert version.preview["file"] == "caf?.jsonl"
    assert version.preview["columns"] == ["k", "s"]
    assert version.preview["rows"] == [["ab", "?"]]


@pytest.mark.django_db
def test_a_scan_writes_its_progress_and_stops_once_superseded(
    cast: Cast, make_dataset: Callable[..., Dataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    version = make_dataset(cast.workspace).versions.get()
    dataset_version_rescan(actor=cast.member, version=version)
    seen: list[float] = []

    def scan_then_rescanned(top: Path, confinement: Confinement, progress: Any) -> None:
        progress(0.25)
        seen.append(DatasetVersion.objects.get(pk=version.pk).progress)
        DatasetVersion.objects.filter(pk=version.pk).update(task_id="a newer scan")
        progress(0.5)
        raise AssertionError("the scan should have stopped")

    monkeypatch.setattr(dataset_services, "PROGRESS_INTERVAL_S", 0)
    monkeypatch.setattr(dataset_services, "scan", scan_then_rescanned)

    assert dataset_version_scan(version_id=version.pk, task_id=version.task_id) == "skipped"
    assert seen == [0.25]


@pytest.mark.django_db
def test_an_unexpected_scan_error_fails_the_version(
    cast: Cast, make_dataset: Callable[..., Dataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    version = make_dataset(cast.workspace).versions.get()
    dataset_version_rescan(actor=cast.member, version=version)

    def broken(top: Path, confinement: Confinement, progress: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(dataset_services, "scan", broken)

    assert dataset_version_scan(version_id=version.pk, task_id=version.task_id) == "failed"
    version.refresh_from_db()
    assert (version.state, version.error) == (
        State.FAILED,
        "The scan failed: RuntimeError: disk on fire",
    )
