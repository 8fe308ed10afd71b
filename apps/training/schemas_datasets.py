"""API shapes of datasets and their versions."""

from datetime import datetime
from typing import Any

from ninja import Field, Schema

from apps.training.models import DatasetVersion

PATH_HELP = "Absolute path of a file or directory under one of the dataset roots."


class DatasetFilterIn(Schema):
    workspace_id: int | None = None
    q: str | None = Field(None, max_length=128, description="Part of the name or description.")


class DatasetIn(Schema):
    workspace_id: int
    name: str = Field(description="Letters, digits, '.', '_' and '-'; unique in the workspace.")
    description: str = ""
    path: str = Field("", description=PATH_HELP)
    note: str = Field("", description="What version 1 holds.")


class DatasetUploadIn(Schema):
    workspace_id: int
    name: str
    description: str = ""
    note: str = ""


class DatasetPatch(Schema):
    description: str


class VersionIn(Schema):
    path: str = Field("", description=PATH_HELP)
    note: str = Field("", description="What this version changes.")


class VersionUploadIn(Schema):
    note: str = ""


class LatestOut(Schema):
    version: int
    state: DatasetVersion.State
    progress: float
    size_bytes: int | None
    file_count: int | None
    format: str


class DatasetOut(Schema):
    id: int
    workspace_id: int
    workspace: str
    name: str
    description: str
    env_name: str = Field(description="The variable a job reading this dataset gets.")
    created_by: str | None
    created_at: datetime
    version_count: int
    latest: LatestOut | None = Field(description="The newest version, whatever its state.")


class VersionOut(Schema):
    version: int
    source: DatasetVersion.Source
    path: str
    state: DatasetVersion.State
    progress: float = Field(description="0 to 1 while scanning.")
    error: str
    size_bytes: int | None
    file_count: int | None
    sha256: str = Field(
        description="A file's SHA-256; for a directory, that of one '<path>\\0<sha256>\\n' "
        "line per file in path order."
    )
    format: str
    skipped: int = Field(description="Links leaving the roots and special files left out.")
    note: str
    created_by: str | None
    created_at: datetime
    scanned_at: datetime | None


class VersionDetailOut(VersionOut):
    dataset_id: int
    dataset: str
    preview: dict[str, Any] = Field(
        description='The first records of the main file: {"file", "format", "columns", '
        '"rows"}, and for Parquet "types" and "total_rows".'
    )


class DatasetDetailOut(DatasetOut):
    versions: list[VersionOut]
