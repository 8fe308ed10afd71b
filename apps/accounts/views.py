"""Pages: sign-in, password, workspaces and members, tokens, users.

Views parse a form, call a selector or service, and render. A service's
ApplicationError becomes a form error on the field it names.
"""

from django.contrib import messages
from django.contrib.auth import login, logout, update_session_auth_hash
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from apps.accounts import selectors, services
from apps.accounts.forms import (
    LoginForm,
    MemberAddForm,
    MemberRoleForm,
    PasswordChangeForm,
    TokenForm,
    UserCreateForm,
    UserPasswordForm,
    WorkspaceForm,
)
from apps.accounts.models import Role
from apps.audit.services import audit_record
from apps.system.errors import ApplicationError
from apps.system.pages import access_error_reraise, form_error, page_of, request_user

# Sign-in -----------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def login_view(request: HttpRequest) -> HttpResponse:
    next_url = request.POST.get("next") or request.GET.get("next") or ""
    if not url_has_allowed_host_and_scheme(next_url, {request.get_host()}):
        next_url = ""
    form = LoginForm(request.POST or None)
    status = 200
    if request.method == "POST" and form.is_valid():
        try:
            user = services.credentials_check(
                username=form.cleaned_data["username"],
                password=form.cleaned_data["password"],
                ip=request.META.get("REMOTE_ADDR"),
            )
        except ApplicationError as exc:
            form_error(form, exc)
            status = exc.status if exc.status == 429 else 400
        else:
            login(request, user)
            audit_record(actor=user, action="session.login", target=user)
            return redirect(next_url or "home")
    return render(request, "accounts/login.html", {"form": form, "next": next_url}, status=status)


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        audit_record(actor=request.user, action="session.logout", target=request.user)
    logout(request)
    return redirect("accounts:login")


@login_required
@require_http_methods(["GET", "POST"])
def password_change_view(request: HttpRequest) -> HttpResponse:
    form = PasswordChangeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            user = services.password_change(
                actor=request_user(request),
                old_password=form.cleaned_data["old_password"],
                new_password=form.cleaned_data["new_password"],
            )
        except ApplicationError as exc:
            form_error(form, exc)
        else:
            update_session_auth_hash(request, user)
            messages.success(request, "Your password was changed.")
            return redirect("accounts:password_change")
    return render(request, "accounts/password_change.html", {"form": form})


# Workspaces --------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def workspace_list(request: HttpRequest) -> HttpResponse:
    user = request_user(request)
    form = WorkspaceForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            workspace = services.workspace_create(
                actor=user,
                name=form.cleaned_data["name"],
                description=form.cleaned_data["description"],
            )
        except ApplicationError as exc:
            form_error(form, exc)
        else:
            messages.success(request, f"Workspace {workspace.name} created.")
            return redirect("accounts:workspace_detail", workspace_id=workspace.pk)
    page = page_of(request, selectors.workspace_list(user=user))
    return render(request, "accounts/workspace_list.html", {"page": page, "form": form})


def _members_context(request: HttpRequest, workspace_id: int, **extra: object) -> dict:
    user = request_user(request)
    workspace = selectors.workspace_get(user=user, workspace_id=workspace_id)
    role = selectors.membership_role(user=user, workspace=workspace)
    return {
        "workspace": workspace,
        "members": selectors.member_list(user=user, workspace=workspace),
        "can_admin": role == Role.ADMIN,
        "my_role": role,
        "roles": Role.choices,
        "add_form": extra.pop("add_form", None) or MemberAddForm(),
        **extra,
    }


def _render_members(request: HttpRequest, workspace_id: int, **extra: object) -> HttpResponse:
    context = _members_context(request, workspace_id, **extra)
    template = "accounts/_members.html" if request.htmx else "accounts/workspace_detail.html"  # type: ignore[attr-defined]
    status = 400 if extra.get("error") else 200
    return render(request, template, context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def workspace_detail(request: HttpRequest, workspace_id: int) -> HttpResponse:
    context = _members_context(request, workspace_id)
    form = WorkspaceForm(
        request.POST or None,
        initial={
            "name": context["workspace"].name,
            "description": context["workspace"].description,
        },
    )
    if request.method == "POST" and form.is_valid():
        try:
            services.workspace_update(
                actor=request_user(request),
                workspace=context["workspace"],
                name=form.cleaned_data["name"],
                description=form.cleaned_data["description"],
            )
        except ApplicationError as exc:
            form_error(form, exc)
        else:
            messages.success(request, "Workspace updated.")
            return redirect("accounts:workspace_detail", workspace_id=workspace_id)
    return render(request, "accounts/workspace_detail.html", {**context, "form": form})


@login_required
@require_POST
def member_add(request: HttpRequest, workspace_id: int) -> HttpResponse:
    user = request_user(request)
    workspace = selectors.workspace_get(user=user, workspace_id=workspace_id)
    form = MemberAddForm(request.POST)
    if form.is_valid():
        try:
            services.member_add(
                actor=user,
                workspace=workspace,
                username=form.cleaned_data["username"],
                role=form.cleaned_data["role"],
            )
        except ApplicationError as exc:
            form_error(form, exc)
        else:
            return _render_members(request, workspace_id)
    return _render_members(request, workspace_id, add_form=form, error=True)


@login_required
@require_POST
def member_role(request: HttpRequest, workspace_id: int, user_id: int) -> HttpResponse:
    user = request_user(request)
    form = MemberRoleForm(request.POST)
    workspace = selectors.workspace_get(user=user, workspace_id=workspace_id)
    membership = selectors.member_get(user=user, workspace=workspace, user_id=user_id)
    try:
        if not form.is_valid():
            raise ApplicationError("Choose a valid role.", field="role")
        services.member_role_set(actor=user, membership=membership, role=form.cleaned_data["role"])
    except ApplicationError as exc:
        access_error_reraise(exc)
        return _render_members(request, workspace_id, error=exc.message)
    return _render_members(request, workspace_id)


@login_required
@require_POST
def member_remove(request: HttpRequest, workspace_id: int, user_id: int) -> HttpResponse:
    user = request_user(request)
    workspace = selectors.workspace_get(user=user, workspace_id=workspace_id)
    membership = selectors.member_get(user=user, workspace=workspace, user_id=user_id)
    try:
        services.member_remove(actor=user, membership=membership)
    except ApplicationError as exc:
        access_error_reraise(exc)
        return _render_members(request, workspace_id, error=exc.message)
    return _render_members(request, workspace_id)


# Tokens ------------------------------------------------------------------------------------


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    """Tokens and the form to make one. The form posts with htmx and the new secret is
    swapped into the page, so a reload shows it no more and creates nothing."""
    user = request_user(request)
    form = TokenForm(request.POST or None)
    created = None
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                token, plaintext = services.token_create(
                    actor=user,
                    name=form.cleaned_data["name"],
                    expires_in_days=form.cleaned_data["expires_in_days"],
                )
            except ApplicationError as exc:
                form_error(form, exc)
                status = 400
            else:
                created = {"token": token, "plaintext": plaintext}
                form = TokenForm()
        else:
            status = 400
    page = page_of(request, selectors.token_list(user=user))
    template = "accounts/_tokens.html" if request.htmx else "accounts/token_list.html"  # type: ignore[attr-defined]
    return render(
        request,
        template,
        {"page": page, "form": form, "created": created, "now": timezone.now()},
        status=status,
    )


@login_required
@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    user = request_user(request)
    token = services.token_revoke(
        actor=user, token=selectors.token_get(user=user, token_id=token_id)
    )
    messages.success(request, f"Token {token.name} revoked.")
    return redirect("accounts:token_list")


# Users (platform admins) -------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def user_list(request: HttpRequest) -> HttpResponse:
    actor = request_user(request)
    users = selectors.user_list(actor=actor)
    form = UserCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            created = services.user_create(actor=actor, **form.cleaned_data)
        except ApplicationError as exc:
            form_error(form, exc)
        else:
            messages.success(request, f"User {created.username} added.")
            return redirect("accounts:user_list")
    return render(
        request,
        "accounts/user_list.html",
        {"page": page_of(request, users), "form": form, "password_form": UserPasswordForm()},
    )


@login_required
@require_POST
def user_update(request: HttpRequest, user_id: int) -> HttpResponse:
    actor = request_user(request)
    user = selectors.user_get(actor=actor, user_id=user_id)
    try:
        action = request.POST.get("action")
        if action == "password":
            password_form = UserPasswordForm(request.POST)
            if not password_form.is_valid():
                raise ApplicationError("Enter a new password.", field="password")
            services.user_password_set(
                actor=actor, user=user, password=password_form.cleaned_data["password"]
            )
            messages.success(request, f"Password of {user.username} set.")
        elif action in {"enable", "disable"}:
            services.user_update(actor=actor, user=user, is_active=action == "enable")
            messages.success(request, f"{user.username} {action}d.")
        elif action in {"promote", "demote"}:
            services.user_update(actor=actor, user=user, is_admin=action == "promote")
            messages.success(request, f"{user.username} {action}d.")
        else:
            raise ApplicationError("Unknown action.", field="action")
    except ApplicationError as exc:
        access_error_reraise(exc)
        messages.error(request, exc.message)
    return redirect("accounts:user_list")
