"""Dataset pages: the list, a new dataset (a path or an upload), a dataset with its
versions and the preview of one, refreshed while a version is scanned; new versions,
rescans and deletes."""

from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_http_methods, require_POST

from apps.accounts.selectors import (
    User,
    Workspace,
    workspace_get,
    workspace_list,
    workspaces_acting,
)
from apps.system.errors import ApplicationError
from apps.system.pages import (
    access_error_reraise,
    form_error,
    is_htmx,
    page_of,
    query_without_page,
    request_user,
)
from apps.training.forms_datasets import (
    DatasetFilterForm,
    DatasetForm,
    DescriptionForm,
    VersionForm,
)
from apps.training.models import Dataset, DatasetVersion
from apps.training.selectors import datasets as selectors
from apps.training.services import datasets as services

# Room for the form fields around the file in a multipart body.
FORM_OVERHEAD_BYTES = 64 * 1024

View = Callable[..., HttpResponse]


def _max_mb() -> int:
    return int(settings.PODIUM["DATASET_UPLOAD_MAX_MB"])


def _roots() -> str:
    return ", ".join(str(root) for root in settings.PODIUM_DATASET_ROOTS)


def upload_limited(view: View) -> View:
    """Refuse a POST whose declared body is past the upload limit before reading it (the
    CSRF check would otherwise parse it first), then check CSRF as usual."""
    protected = csrf_protect(view)

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        limit = _max_mb() * 1024 * 1024 + FORM_OVERHEAD_BYTES
        if request.method == "POST" and declared > limit:
            messages.error(request, f"The file is larger than the upload limit of {_max_mb()} MB.")
            return redirect(request.get_full_path())
        return protected(request, *args, **kwargs)

    return csrf_exempt(wrapper)


def _acting_workspaces(user: User, workspaces: Iterable[Workspace]) -> list[tuple[int, str]]:
    """Those of ``workspaces`` (of ``workspace_list``) where ``user`` may create datasets."""
    return [(w.pk, w.name) for w in workspaces_acting(user=user, workspaces=workspaces)]


@login_required
def dataset_list(request: HttpRequest) -> HttpResponse:
    """The datasets of the user's workspaces, with their newest version, filtered."""
    user = request_user(request)
    visible = list(workspace_list(user=user))
    form = DatasetFilterForm(request.GET or None, workspaces=[(w.pk, w.name) for w in visible])
    filters = selectors.DatasetFilter()
    if form.is_valid():
        filters = selectors.DatasetFilter(
            workspace_id=form.cleaned_data["workspace"], q=form.cleaned_data["q"].strip()
        )
    context = {
        "form": form,
        "page": page_of(request, selectors.dataset_list(user=user, filters=filters)),
        "query": query_without_page(request),
        "can_create": bool(_acting_workspaces(user, visible)),
    }
    template = "training/_dataset_rows.html" if is_htmx(request) else "training/dataset_list.html"
    return render(request, template, context)


def _source(form: VersionForm) -> services.DatasetSource:
    data = form.cleaned_data
    return services.DatasetSource(
        path=data["path"] or "", upload=data["file"] or None, note=data["note"] or ""
    )


@login_required
@require_http_methods(["GET", "POST"])
@upload_limited
def dataset_new(request: HttpRequest) -> HttpResponse:
    """A new dataset: register a path on shared storage, or upload a file."""
    user = request_user(request)
    workspaces = _acting_workspaces(user, workspace_list(user=user))
    form = DatasetForm(
        request.POST or None,
        request.FILES or None,
        initial={"workspace": request.GET.get("workspace")},
        workspaces=workspaces,
        roots=_roots(),
        max_mb=_max_mb(),
    )
    status = 200
    if request.method == "POST":
        status = 400
        if form.is_valid():
            data = form.cleaned_data
            try:
                dataset = services.dataset_create(
                    actor=user,
                    workspace=workspace_get(user=user, workspace_id=data["workspace"]),
                    name=data["name"],
                    description=data["description"],
                    source=_source(form),
                )
            except ApplicationError as exc:
                form_error(form, exc)
            else:
                messages.success(request, f"Dataset {dataset.name} created; scanning version 1.")
                return redirect("datasets:dataset_detail", dataset_id=dataset.pk)
    context = {
        "form": form,
        "title": "New dataset",
        "button": "Create dataset",
        "action": reverse("datasets:dataset_new"),
        "can_submit": bool(workspaces),
    }
    return render(request, "training/dataset_form.html", context, status=status)


def _preview_table(version: DatasetVersion | None) -> dict[str, Any] | None:
    """The version's preview as the page draws it: each column with its type."""
    if version is None or not version.preview:
        return None
    preview = version.preview
    columns = preview.get("columns") or []
    types = preview.get("types") or [""] * len(columns)
    return {**preview, "header": list(zip(columns, types, strict=False))}


def _detail_context(request: HttpRequest, dataset_id: int) -> dict[str, Any]:
    user = request_user(request)
    dataset = selectors.dataset_get(user=user, dataset_id=dataset_id)
    versions = list(selectors.dataset_versions(dataset=dataset))
    try:
        wanted = int(request.GET.get("version") or 0)
    except ValueError:
        wanted = 0
    shown = next((v for v in versions if v.version == wanted), versions[0] if versions else None)
    if shown is not None:
        shown = selectors.dataset_version_get(dataset=dataset, version=shown.version)
    readers = selectors.dataset_version_readers(versions=versions)
    return {
        "dataset": dataset,
        "env_name": selectors.dataset_env_name(dataset.name),
        "versions": [(v, readers.get(v.pk, [])) for v in versions],
        "shown": shown,
        "preview": _preview_table(shown),
        "scanning": any(v.state == DatasetVersion.State.SCANNING for v in versions),
        "can_act": selectors.dataset_can_act(user=user, dataset=dataset),
    }


@never_cache
@login_required
def dataset_detail(request: HttpRequest, dataset_id: int) -> HttpResponse:
    """A dataset: its versions, the preview of one, and what jobs read it."""
    context = _detail_context(request, dataset_id)
    context["description_form"] = DescriptionForm(
        initial={"description": context["dataset"].description}
    )
    return render(request, "training/dataset_detail.html", context)


@never_cache
@login_required
def dataset_state(request: HttpRequest, dataset_id: int) -> HttpResponse:
    """The versions and the preview: the partial the page polls while a scan runs."""
    return render(request, "training/_dataset_state.html", _detail_context(request, dataset_id))


def _dataset(request: HttpRequest, dataset_id: int) -> Dataset:
    return selectors.dataset_get(user=request_user(request), dataset_id=dataset_id)


def _detail_url(dataset_id: int, version: int | None = None) -> str:
    url = reverse("datasets:dataset_detail", kwargs={"dataset_id": dataset_id})
    return f"{url}?version={version}" if version else url


@login_required
@require_POST
def dataset_edit(request: HttpRequest, dataset_id: int) -> HttpResponse:
    """Change the description."""
    dataset = _dataset(request, dataset_id)
    form = DescriptionForm(request.POST)
    try:
        if not form.is_valid():
            limit = services.MAX_DESCRIPTION_CHARS
            raise ApplicationError(
                f"Description is longer than {limit} characters.", field="description"
            )
        services.dataset_update(
            actor=request_user(request),
            dataset=dataset,
            description=form.cleaned_data["description"],
        )
    except ApplicationError as exc:
        access_error_reraise(exc)
        messages.error(request, exc.message)
    else:
        messages.success(request, "Description saved.")
    return redirect(_detail_url(dataset_id))


@login_required
@require_POST
def dataset_delete(request: HttpRequest, dataset_id: int) -> HttpResponse:
    """Delete the dataset, unless a job that has not finished reads it."""
    dataset = _dataset(request, dataset_id)
    try:
        services.dataset_delete(actor=request_user(request), dataset=dataset)
    except ApplicationError as exc:
        access_error_reraise(exc)
        messages.error(request, exc.message)
        return redirect(_detail_url(dataset_id))
    messages.success(request, f"Dataset {dataset.name} deleted.")
    return redirect("datasets:dataset_list")


@login_required
@require_http_methods(["GET", "POST"])
@upload_limited
def version_new(request: HttpRequest, dataset_id: int) -> HttpResponse:
    """A new version of a dataset: a path on shared storage, or an upload."""
    user = request_user(request)
    dataset = _dataset(request, dataset_id)
    form = VersionForm(
        request.POST or None, request.FILES or None, roots=_roots(), max_mb=_max_mb()
    )
    status = 200
    if request.method == "POST":
        status = 400
        if form.is_valid():
            try:
                version = services.dataset_version_add(
                    actor=user, dataset=dataset, source=_source(form)
                )
            except ApplicationError as exc:
                form_error(form, exc)
            else:
                messages.success(request, f"Version {version.version} added; scanning it.")
                return redirect(_detail_url(dataset_id, version.version))
    context = {
        "form": form,
        "dataset": dataset,
        "title": f"New version of {dataset.name}",
        "button": "Add version",
        "action": reverse("datasets:version_new", kwargs={"dataset_id": dataset_id}),
        "can_submit": selectors.dataset_can_act(user=user, dataset=dataset),
    }
    return render(request, "training/dataset_form.html", context, status=status)


def _version_action(
    request: HttpRequest,
    dataset_id: int,
    version: int,
    action: Callable[..., Any],
    *,
    done: str,
    then: str,
) -> HttpResponse:
    """Run ``action`` on the version; back to the dataset page (showing the version when
    it failed, or ``then``) with the outcome as a message."""
    found = selectors.dataset_version_get(dataset=_dataset(request, dataset_id), version=version)
    try:
        action(actor=request_user(request), version=found)
    except ApplicationError as exc:
        access_error_reraise(exc)
        messages.error(request, exc.message)
        return redirect(_detail_url(dataset_id, version))
    messages.success(request, f"Version {version} {done}.")
    return redirect(then)


@login_required
@require_POST
def version_scan(request: HttpRequest, dataset_id: int, version: int) -> HttpResponse:
    """Scan a version again."""
    return _version_action(
        request,
        dataset_id,
        version,
        services.dataset_version_rescan,
        done="is being scanned again",
        then=_detail_url(dataset_id, version),
    )


@login_required
@require_POST
def version_delete(request: HttpRequest, dataset_id: int, version: int) -> HttpResponse:
    """Delete a version, unless a job that has not finished reads it."""
    return _version_action(
        request,
        dataset_id,
        version,
        services.dataset_version_delete,
        done="deleted",
        then=_detail_url(dataset_id),
    )
