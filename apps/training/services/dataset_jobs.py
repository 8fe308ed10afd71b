"""Datasets a job reads: attached when it is submitted (``name`` or ``name@version`` in
its workspace), their paths given to every attempt's processes as ``PODIUM_DATASET_<NAME>``."""

import re

from django.db.models import Max, Q

from apps.accounts.models import User
from apps.scheduler.models import Job
from apps.system.errors import ApplicationError
from apps.training.models import Dataset, DatasetVersion, JobDataset
from apps.training.selectors.datasets import dataset_env_name

REF = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,63})(?:@(?P<version>[1-9][0-9]{0,8}))?")
MAX_JOB_DATASETS = 32

State = DatasetVersion.State


def _refs_parse(refs: list[str]) -> list[tuple[str, str, int | None]]:
    """``(ref, name, version or None)`` of each reference, each dataset named once."""
    if not isinstance(refs, list) or not all(isinstance(ref, str) for ref in refs):
        raise ApplicationError("datasets must be a list of dataset names.", field="datasets")
    if len(refs) > MAX_JOB_DATASETS:
        raise ApplicationError(
            f"A job reads at most {MAX_JOB_DATASETS} datasets.", field="datasets"
        )
    parsed: list[tuple[str, str, int | None]] = []
    env_names: dict[str, str] = {}
    for raw in refs:
        ref = raw.strip()
        match = REF.fullmatch(ref)
        if match is None:
            raise ApplicationError(
                f"{raw!r} is not a dataset reference (name or name@version).", field="datasets"
            )
        name, number = match["name"], match["version"]
        env_name = dataset_env_name(name)
        if env_name in env_names:
            other = env_names[env_name]
            problem = f"{name} is named twice" if other == name else f"{other} and {name} clash"
            raise ApplicationError(f"{problem}: both would set {env_name}.", field="datasets")
        env_names[env_name] = name
        parsed.append((ref, name, int(number) if number else None))
    return parsed


def _version_usable(ref: str, version: DatasetVersion | None, name: str) -> DatasetVersion:
    if version is None:
        raise ApplicationError(f"{ref}: {name} has no such version.", field="datasets")
    if version.state == State.SCANNING:
        raise ApplicationError(
            f"{ref} is still being scanned; try again shortly.", field="datasets"
        )
    if version.state == State.FAILED:
        raise ApplicationError(f"{ref} failed its scan: {version.error}", field="datasets")
    return version


def job_datasets_attach(*, job: Job, refs: list[str], actor: User) -> list[JobDataset]:
    """Attach the datasets ``refs`` name to ``job`` (in the submit's transaction): ``name``
    is the newest ready version, ``name@3`` version 3, both in the job's workspace. The
    submit itself is audited."""
    parsed = _refs_parse(refs)
    if not parsed:
        return []
    names = {name for _, name, _ in parsed}
    datasets = {
        d.name: d
        for d in Dataset.objects.select_for_update().filter(
            workspace_id=job.workspace_id, name__in=names
        )
    }
    for ref, name, _ in parsed:
        if name not in datasets:
            raise ApplicationError(f"{ref}: there is no dataset named {name}.", field="datasets")
    newest = dict(
        DatasetVersion.objects.filter(
            dataset__in=[datasets[name] for _, name, number in parsed if number is None],
            state=State.READY,
        )
        .values("dataset_id")
        .annotate(newest=Max("version"))
        .values_list("dataset_id", "newest")
    )
    wanted = {
        (datasets[name].pk, number or newest.get(datasets[name].pk, 0))
        for _, name, number in parsed
    }
    query = Q(pk__in=[])
    for dataset_id, number in wanted:
        query |= Q(dataset_id=dataset_id, version=number)
    found = {(v.dataset_id, v.version): v for v in DatasetVersion.objects.filter(query)}
    attached = []
    for ref, name, number in parsed:
        dataset = datasets[name]
        if number is None and dataset.pk not in newest:
            raise ApplicationError(f"{ref} has no ready version yet.", field="datasets")
        version = found.get((dataset.pk, number or newest[dataset.pk]))
        version = _version_usable(ref, version, name)
        attached.append(
            JobDataset(
                job=job,
                version=version,
                ref=f"{name}@{version.version}",
                env_name=dataset_env_name(name),
            )
        )
    return JobDataset.objects.bulk_create(attached)


def datasets_launch_env(job_ids: list[int]) -> dict[int, dict[str, str]]:
    """For each job id, the variables of the datasets it reads: ``{env name: path}``."""
    env: dict[int, dict[str, str]] = {job_id: {} for job_id in job_ids}
    rows = JobDataset.objects.filter(job_id__in=job_ids, version__isnull=False).values_list(
        "job_id", "env_name", "version__path"
    )
    for job_id, env_name, path in rows:
        env[job_id][env_name] = path
    return env


def datasets_gone(job_ids: list[int]) -> dict[int, list[JobDataset]]:
    """For each job id that has some, the datasets it read whose version was deleted since
    (a finished job requeued later)."""
    gone: dict[int, list[JobDataset]] = {}
    for row in JobDataset.objects.filter(job_id__in=job_ids, version__isnull=True):
        gone.setdefault(row.job_id, []).append(row)
    return gone
