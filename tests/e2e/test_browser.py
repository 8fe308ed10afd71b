"""The console in Chromium: sign-in, workspaces, users, members, tokens, audit, live status."""

import os
import re
import signal
import sys
import time

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    Console,
    PageGuard,
    state_history,
    state_history_start,
)

pytestmark = pytest.mark.e2e

USER_PASSWORD = "viewer passphrase 2718"
COMPONENTS = ("web", "worker", "beat", "redis", "database")
DOWN_WITHIN = 4.0
BACK_WITHIN = 30.0


def sign_in(page: Page, username: str, password: str) -> None:
    page.goto("/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.get_by_role("button", name="Sign in").click()


def mark_document(page: Page) -> None:
    """Tag the current document; a full reload would drop the tag."""
    page.evaluate("() => { window.sameDocument = true; }")


def same_document(page: Page) -> bool:
    return bool(page.evaluate("() => window.sameDocument === true"))


def audit_rows(page: Page) -> list[dict[str, str]]:
    return page.eval_on_selector_all(
        "#audit-entries tbody tr",
        """rows => rows.filter(r => r.cells.length > 2).map(r => ({
            actor: r.cells[1].innerText.trim(),
            action: r.cells[2].innerText.trim(),
            target: r.cells[3].innerText.trim(),
        }))""",
    )


def test_wrong_password_shows_the_error_and_stays_on_sign_in(
    page: Page, console: Console, guard: PageGuard
) -> None:
    guard.expect_error(r"status of 400 .* at http://127\.0\.0\.1:\d+/login/$")

    sign_in(page, ADMIN_USER, "not the password")

    expect(page).to_have_url(re.compile(r"/login/$"))
    expect(page.get_by_role("alert")).to_contain_text("Wrong username or password")
    expect(page.locator("header.topbar")).to_have_count(0)
    guard.assert_clean()


def test_admin_journey(page: Page, console: Console, guard: PageGuard) -> None:
    sign_in(page, ADMIN_USER, ADMIN_PASSWORD)
    expect(page).to_have_url(re.compile(r"/workspaces/$"))

    form = page.locator("#workspace-create")
    form.locator("input[name=name]").fill("Vision")
    form.locator("textarea[name=description]").fill("Image models")
    form.get_by_role("button", name="Create workspace").click()
    expect(page).to_have_url(re.compile(r"/workspaces/\d+/$"))
    expect(page.locator("h1")).to_have_text("Vision")
    workspace_url = page.url

    page.get_by_role("link", name="Users").click()
    form = page.locator("#user-create")
    form.locator("input[name=username]").fill("carol")
    form.locator("input[name=email]").fill("carol@example.com")
    form.locator("input[name=password]").fill(USER_PASSWORD)
    form.get_by_role("button", name="Add user").click()
    expect(page.locator(".messages")).to_contain_text("User carol added.")
    expect(page.locator("table.grid tbody tr", has_text="carol")).to_have_count(1)

    page.goto(workspace_url)
    mark_document(page)
    form = page.locator("#member-add")
    form.locator("input[name=username]").fill("carol")
    form.locator("select[name=role]").select_option("viewer")
    form.get_by_role("button", name="Add member").click()
    expect(page.locator("#members tbody tr", has_text="carol")).to_have_count(1)
    expect(page.get_by_label("Role of carol")).to_have_value("viewer")
    expect(page.locator("#member-add input[name=username]")).to_have_value("")
    assert same_document(page), "adding a member reloaded the page"

    page.goto("/tokens/")
    form = page.locator("#token-create")
    form.locator("input[name=name]").fill("journey")
    form.get_by_role("button", name="Create token").click()
    secret_box = page.locator("#token-created input.secret")
    expect(secret_box).to_have_value(re.compile(r"^pdm_"))
    secret = secret_box.input_value()
    page.reload()
    expect(page.locator("#token-created")).to_have_count(0)
    expect(page.locator("table.grid tbody tr", has_text="journey")).to_have_count(1)
    assert secret not in page.content()
    status, me = console.api("GET", "/api/auth/me", token=secret)
    assert status == 200, me
    assert me["username"] == ADMIN_USER
    assert me["is_admin"] is True

    page.get_by_role("link", name="Audit").click()
    expect(page.locator("#audit-entries tbody tr").first).to_be_visible()
    seen = {(row["actor"], row["action"]) for row in audit_rows(page)}
    for action in ("workspace.create", "user.create", "member.add", "token.create"):
        assert (ADMIN_USER, action) in seen, f"no {action} by {ADMIN_USER} in {sorted(seen)}"
    guard.assert_clean()


def test_viewer_sees_the_workspace_but_cannot_manage_members(
    page: Page, console: Console, guard: PageGuard
) -> None:
    token = console.token()
    status, workspace = console.api("POST", "/api/workspaces", token=token, body={"name": "Speech"})
    assert status == 201, workspace
    status, body = console.api(
        "POST", "/api/users", token=token, body={"username": "dave", "password": USER_PASSWORD}
    )
    assert status == 201, body
    status, body = console.api(
        "POST",
        f"/api/workspaces/{workspace['id']}/members",
        token=token,
        body={"username": "dave", "role": "viewer"},
    )
    assert status == 201, body

    sign_in(page, "dave", USER_PASSWORD)
    expect(page).to_have_url(re.compile(r"/workspaces/$"))
    page.get_by_role("link", name="Speech").click()
    expect(page.locator("h1")).to_have_text("Speech")

    expect(page.locator("#members tbody tr", has_text="dave")).to_contain_text("Viewer")
    expect(page.locator("#members tbody tr", has_text=ADMIN_USER)).to_have_count(1)
    expect(page.locator("#member-add")).to_have_count(0)
    expect(page.locator("#members form")).to_have_count(0)
    expect(page.locator("#members select")).to_have_count(0)
    expect(page.locator("main form")).to_have_count(0)
    expect(page.get_by_role("link", name="Users")).to_have_count(0)
    guard.assert_clean()


def test_status_page_turns_red_when_the_worker_dies_and_green_when_it_is_back(
    page: Page, console: Console, guard: PageGuard, request: pytest.FixtureRequest
) -> None:
    sign_in(page, ADMIN_USER, ADMIN_PASSWORD)
    page.goto("/status/")
    expect(page.locator("#live-state")).to_have_class(re.compile(r"\bon\b"))
    expect(page.locator("#live-state")).to_have_text("live")
    for name in COMPONENTS:
        expect(page.locator(f"#component-{name}")).to_have_attribute("data-state", "ok")
    state_history_start(page, "component-worker")

    console.track()
    worker = console.pid("worker")
    killed_at = time.time()
    os.kill(worker, signal.SIGKILL)

    page.wait_for_function(
        "() => window.stateHistory.some(s => s.state === 'down')", timeout=15_000
    )
    page.wait_for_function(
        "() => window.stateHistory.at(-1).state === 'ok'", timeout=BACK_WITHIN * 1000
    )
    states = state_history(page)
    down_at = next(s["at"] for s in states if s["state"] == "down")
    back_at = states[-1]["at"]
    request.node.user_properties += [
        ("worker_down_seconds", round(down_at - killed_at, 2)),
        ("worker_back_seconds", round(back_at - killed_at, 2)),
    ]
    sys.stderr.write(
        f"\nworker killed: status page red after {down_at - killed_at:.2f} s, "
        f"green again after {back_at - killed_at:.2f} s\n"
    )

    assert [s["state"] for s in states] == ["ok", "down", "ok"]
    assert down_at - killed_at <= DOWN_WITHIN
    expect(page.locator("#component-worker")).to_have_attribute("data-state", "ok")
    expect(page.locator("#live-state")).to_have_class(re.compile(r"\bon\b"))
    assert console.pid("worker") != worker
    status, health = console.api("GET", "/api/health")
    assert status == 200, health
    guard.assert_clean()
