"""Dataset fixtures: dataset roots and an upload area in a temporary directory, and datasets
with ready versions on files there."""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from apps.accounts.models import Workspace
from apps.training.models import Dataset, DatasetVersion


@dataclass(frozen=True)
class DatasetRoots:
    shared: Path  # the one dataset root
    uploads: Path  # the upload area, inside the root as by default
    outside: Path  # a directory outside every root


@pytest.fixture
def dataset_roots(settings: Any, tmp_path: Path) -> DatasetRoots:
    """One dataset root with the upload area inside it, and a 1 MB upload limit."""
    shared = (tmp_path / "shared").resolve()
    outside = (tmp_path / "outside").resolve()
    shared.mkdir()
    outside.mkdir()
    uploads = shared / "uploads"
    settings.PODIUM_DATASET_ROOTS = [shared]
    settings.PODIUM_DATASET_UPLOAD_DIR = uploads
    settings.PODIUM = {**settings.PODIUM, "DATASET_UPLOAD_MAX_MB": 1}
    return DatasetRoots(shared=shared, uploads=uploads, outside=outside)


def dataset_folder(root: Path, workspace: Workspace, name: str) -> Path:
    """A directory under ``root`` holding one text file, ``a.txt`` (``hello``)."""
    folder = root / f"{workspace.pk}-{name}"
    folder.mkdir(exist_ok=True)
    (folder / "a.txt").write_text("hello\n")
    return folder


def dataset_make(
    root: Path,
    workspace: Workspace,
    name: str = "pets",
    *,
    versions: int = 1,
    state: str = DatasetVersion.State.READY,
) -> Dataset:
    """A dataset whose versions are ready (or in ``state``), registered on a
    ``dataset_folder`` under ``root``."""
    folder = dataset_folder(root, workspace, name)
    dataset = Dataset.objects.create(workspace=workspace, name=name, last_version=versions)
    for number in range(1, versions + 1):
        DatasetVersion.objects.create(
            dataset=dataset,
            version=number,
            source=DatasetVersion.Source.PATH,
            path=str(folder),
            state=state,
            progress=1.0 if state == DatasetVersion.State.READY else 0.0,
            size_bytes=6,
            file_count=1,
            sha256="0" * 64,
            format="text",
            preview={"file": "a.txt", "format": "text", "columns": ["line"], "rows": [["hello"]]},
            task_id=f"task-{name}-{number}",
        )
    return dataset


@pytest.fixture
def make_dataset(dataset_roots: DatasetRoots) -> Callable[..., Dataset]:
    """``make_dataset(workspace, "pets", versions=2)``: ``dataset_make`` under the root."""
    return partial(dataset_make, dataset_roots.shared)
