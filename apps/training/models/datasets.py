"""Datasets: named, versioned data on shared storage that jobs read."""

from django.conf import settings
from django.db import models


class Dataset(models.Model):
    """A named dataset of one workspace; its data lives in its versions."""

    workspace = models.ForeignKey(
        "accounts.Workspace", on_delete=models.CASCADE, related_name="datasets"
    )
    name = models.CharField(max_length=64)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # The highest version number given so far: numbers are never reused, so "name@3"
    # always means the same data, even after version 3 is deleted.
    last_version = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "name"], name="dataset_workspace_name")
        ]

    def __str__(self) -> str:
        return self.name


class DatasetVersion(models.Model):
    """One immutable version: a registered path or an uploaded file, and what a scan found.

    ``sha256`` is the file's own digest for a single file; for a directory it is the digest
    of one line ``<relative path>\\0<file sha256>\\n`` per file, in path order.
    """

    class Source(models.TextChoices):
        PATH = "path", "Registered path"
        UPLOAD = "upload", "Uploaded file"

    class State(models.TextChoices):
        SCANNING = "scanning", "Scanning"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    class Format(models.TextChoices):
        TEXT = "text", "Text"
        JSONL = "jsonl", "JSON lines"
        CSV = "csv", "CSV"
        PARQUET = "parquet", "Parquet"
        MIXED = "mixed", "Mixed"
        UNKNOWN = "unknown", "Unknown"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    source = models.CharField(max_length=16, choices=Source.choices)
    path = models.CharField(max_length=1024)  # absolute, on storage every node mounts
    state = models.CharField(max_length=16, choices=State.choices, default=State.SCANNING)
    error = models.CharField(max_length=500, blank=True)
    progress = models.FloatField(default=0.0)  # 0..1 while scanning
    size_bytes = models.BigIntegerField(null=True, blank=True)
    file_count = models.PositiveIntegerField(null=True, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    format = models.CharField(max_length=16, choices=Format.choices, blank=True)
    # {"file", "format", "columns", "rows", ...}: the first records of the main file.
    preview = models.JSONField(default=dict, blank=True)
    skipped = models.PositiveIntegerField(default=0)  # links leaving the roots, special files
    note = models.CharField(max_length=300, blank=True)  # what this version changes
    task_id = models.CharField(max_length=64, blank=True)  # the scan that owns the row
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    scanned_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["dataset", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["dataset", "version"], name="datasetversion_dataset_version"
            )
        ]

    def __str__(self) -> str:
        return f"{self.dataset.name}@{self.version}"


class JobDataset(models.Model):
    """A dataset version a job reads, and the variable that carries its path.

    A version can be deleted once no unfinished job reads it; ``ref`` keeps what the job
    read after that.
    """

    job = models.ForeignKey("scheduler.Job", on_delete=models.CASCADE, related_name="datasets")
    version = models.ForeignKey(
        DatasetVersion, null=True, on_delete=models.SET_NULL, related_name="job_uses"
    )
    ref = models.CharField(max_length=80)  # "name@version"
    env_name = models.CharField(max_length=128)

    class Meta:
        ordering = ["job", "env_name"]
        constraints = [
            models.UniqueConstraint(fields=["job", "env_name"], name="jobdataset_job_env"),
            models.UniqueConstraint(fields=["job", "version"], name="jobdataset_job_version"),
        ]

    def __str__(self) -> str:
        return f"job {self.job_id}: {self.env_name}"
