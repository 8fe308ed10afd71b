"""Reads of datasets, scoped to the user's workspaces: members of any role and platform
admins see a workspace's datasets; anyone else gets "not found"."""

import re
from dataclasses import dataclass

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery

from apps.accounts.models import User
from apps.accounts.selectors import ACTING_ROLES, membership_role, workspace_ids_member
from apps.scheduler.models import Job
from apps.system.errors import NotFoundError
from apps.training.models import Dataset, DatasetVersion, JobDataset

# What the list shows of each dataset's newest version.
LATEST_FIELDS = ("version", "state", "progress", "size_bytes", "file_count", "format")
ENV_PREFIX = "PODIUM_DATASET_"


def dataset_env_name(name: str) -> str:
    """The variable that carries a dataset's path to a job: ``PODIUM_DATASET_`` and the
    name in capitals, every character other than a letter or digit made ``_``."""
    return ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", name.upper())


def dataset_visible(*, user: User) -> QuerySet[Dataset]:
    """Every dataset ``user`` may see."""
    datasets = Dataset.objects.select_related("workspace", "created_by")
    if user.is_platform_admin:
        return datasets
    return datasets.filter(workspace_id__in=workspace_ids_member(user=user))


@dataclass(frozen=True)
class DatasetFilter:
    """Filters of the dataset list; empty values do not filter."""

    workspace_id: int | None = None
    q: str = ""


def dataset_list(*, user: User, filters: DatasetFilter | None = None) -> QuerySet[Dataset]:
    """Datasets ``user`` may see, by workspace and name, each with ``version_count`` and its
    newest version's fields as ``latest_<field>`` (None without versions)."""
    filters = filters or DatasetFilter()
    datasets = dataset_visible(user=user)
    if filters.workspace_id is not None:
        datasets = datasets.filter(workspace_id=filters.workspace_id)
    if filters.q:
        datasets = datasets.filter(
            Q(name__icontains=filters.q) | Q(description__icontains=filters.q)
        )
    newest = DatasetVersion.objects.filter(dataset=OuterRef("pk")).order_by("-version")
    latest = {f"latest_{name}": Subquery(newest.values(name)[:1]) for name in LATEST_FIELDS}
    return datasets.annotate(version_count=Count("versions"), **latest).order_by(
        "workspace__name", "name", "pk"
    )


def dataset_get(*, user: User, dataset_id: int) -> Dataset:
    """One dataset ``user`` may see, annotated as in ``dataset_list``, else NotFoundError."""
    try:
        return dataset_list(user=user).get(pk=dataset_id)
    except Dataset.DoesNotExist:
        raise NotFoundError("Dataset not found.", field="dataset_id") from None


def dataset_versions(*, dataset: Dataset) -> QuerySet[DatasetVersion]:
    """The dataset's versions, newest first, without their previews."""
    return (
        DatasetVersion.objects.filter(dataset=dataset)
        .select_related("created_by")
        .defer("preview")
        .order_by("-version")
    )


def dataset_version_get(*, dataset: Dataset, version: int) -> DatasetVersion:
    """One version of a dataset the caller got through ``dataset_get``, else NotFoundError."""
    try:
        found = DatasetVersion.objects.select_related("created_by").get(
            dataset=dataset, version=version
        )
    except DatasetVersion.DoesNotExist:
        raise NotFoundError(f"{dataset.name} has no version {version}.", field="version") from None
    found.dataset = dataset
    return found


def dataset_can_act(*, user: User, dataset: Dataset) -> bool:
    """Whether ``user`` may change or delete ``dataset`` and its versions."""
    return membership_role(user=user, workspace=dataset.workspace) in ACTING_ROLES


def dataset_version_readers(*, versions: list[DatasetVersion]) -> dict[int, list[Job]]:
    """The jobs that read each version (by version id), newest first, in one query."""
    readers: dict[int, list[Job]] = {v.pk: [] for v in versions}
    uses = (
        JobDataset.objects.filter(version__in=versions)
        .select_related("job")
        .order_by("-job__created_at", "-job_id")
    )
    for use in uses:
        if use.version_id is not None:
            readers[use.version_id].append(use.job)
    return readers


def job_dataset_list(*, job: Job) -> list[JobDataset]:
    """The datasets a job reads, with their versions (None when deleted since)."""
    return list(JobDataset.objects.filter(job=job).select_related("version__dataset"))
