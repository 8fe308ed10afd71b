"""The client commands against a real console (``live_server``) and, for the log's
polling, a small fake one: submit, ls, show, logs, cancel, login, and their errors."""

import json
import os
import stat
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from apps.accounts import services
from apps.accounts.models import User, Workspace
from apps.scheduler.models import Job, Pool
from apps.training.models import LogLine
from podium.client import commands
from podium.client.commands import main
from tests.scheduler.factories import job_create, pool_create, scheduled_node_create

PODIUM = Path(sys.executable).parent / "podium"

JOB = """\
name: sweep
command: python sweep.py
gpus_per_node: 2
"""


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str


@pytest.fixture(autouse=True)
def _no_saved_login(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing from the machine's own login or environment leaks into a test."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("PODIUM_URL", raising=False)
    monkeypatch.delenv("PODIUM_TOKEN", raising=False)
    monkeypatch.setattr(commands, "FOLLOW_INTERVAL", 0.05)


@pytest.fixture
def podium(capsys: pytest.CaptureFixture[str]) -> Callable[..., Ran]:
    """Run one client command in this process: its exit status, stdout and stderr."""

    def run(*args: str) -> Ran:
        code = main(list(args))
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    return run


@pytest.fixture
def job_yaml(tmp_path: Path) -> Callable[[str], str]:
    def write(text: str) -> str:
        path = tmp_path / "job.yaml"
        path.write_text(text)
        return str(path)

    return write


@pytest.fixture
def console(
    live_server: Any, workspace: Workspace, member: User, monkeypatch: pytest.MonkeyPatch
) -> str:
    """A real console with one 8-GPU node, and ``member``'s token in the environment."""
    pool = pool_create("default", is_default=True)
    scheduled_node_create("gpu-1", pool, gpus=8)
    _, token = services.token_create(actor=member, name="cli tests")
    monkeypatch.setenv("PODIUM_URL", live_server.url)
    monkeypatch.setenv("PODIUM_TOKEN", token)
    return str(live_server.url)


# Against the real console ------------------------------------------------------------------


def test_a_submitted_job_is_listed_shown_and_cancelled(
    console: str, podium: Callable[..., Ran], job_yaml: Callable[[str], str]
) -> None:
    submitted = podium("submit", job_yaml(JOB + "workspace: Vision\n"))
    assert submitted.code == 0, submitted.err
    job = Job.objects.get()
    assert (job.name, job.gpus_per_node, job.workspace.name) == ("sweep", 2, "Vision")
    assert submitted.out == (
        f"Submitted job {job.pk} (sweep) to workspace Vision, pool default: pending\n"
    )

    listed = podium("ls")
    assert listed.code == 0, listed.err
    header, row = listed.out.splitlines()
    assert header.split() == ["ID", "NAME", "WORKSPACE", "STATE", "GPUS", "POOL", "AGE"]
    assert row.split()[:6] == [str(job.pk), "sweep", "Vision", "pending", "1x2", "default"]

    shown = podium("show", str(job.pk))
    assert shown.code == 0, shown.err
    assert shown.out.startswith(f"Job {job.pk}: sweep\n  workspace  Vision\n  state      pending")
    assert "command    python sweep.py" in shown.out
    assert "timeline (last 1 of 1)" in shown.out

    cancelled = podium("cancel", str(job.pk))
    assert cancelled.code == 0, cancelled.err
    assert cancelled.out.startswith(f"Job {job.pk} cancelled")
    job.refresh_from_db()
    assert job.state == Job.State.CANCELLED

    assert podium("ls").err == "No unfinished jobs (--all shows all).\n"
    assert podium("ls", "--all").out.count("cancelled") == 1
    assert podium("ls", "--state", "cancelled", "--workspace", "Vision").out.count("\n") == 2
    again = podium("cancel", str(job.pk))
    assert (again.code, again.err) == (1, "podium: The job already cancelled.\n")


def test_the_workspace_comes_from_the_flag_or_is_the_only_one(
    console: str, podium: Callable[..., Ran], job_yaml: Callable[[str], str]
) -> None:
    path = job_yaml(JOB)

    assert podium("submit", "--quiet", path).out.strip().isdigit()
    assert podium("submit", "-q", "-w", "vision", path).code == 0
    unknown = podium("submit", "-w", "Speech", path)

    assert (unknown.code, unknown.err) == (
        1,
        "podium: you have no workspace 'Speech' (yours: Vision)\n",
    )
    assert Job.objects.count() == 2


def test_refusals_name_the_files_line(
    console: str, podium: Callable[..., Ran], job_yaml: Callable[[str], str]
) -> None:
    def refused(text: str) -> str:
        path = job_yaml(text)
        ran = podium("submit", path)
        assert ran.code == 1
        return ran.err.replace(path, "job.yaml")

    assert refused("name: big\ncommand: x\n\ngpus_per_node: 16\n") == (
        "job.yaml:4: gpus_per_node: No node in pool default has 16 GPUs (the largest has 8).\n"
    )
    assert refused("name: p\ncommand: x\npool: h100\n") == (
        "job.yaml:3: pool: There is no pool named 'h100'.\n"
    )
    assert refused("workspace: Speech\nname: p\ncommand: x\n") == (
        "job.yaml:1: workspace: you have no workspace 'Speech' (yours: Vision)\n"
    )
    assert refused("name: p\ncommand: x\ndatasets:\n  - tokens@2\n") == (
        "job.yaml:4: datasets: tokens@2: there is no dataset named tokens.\n"
    )
    assert refused("name: p\ncommand: [x\n").startswith("job.yaml:3:1: expected ',' or ']'")
    assert refused("name: p\ncommand: x\ngpu: 1\n") == (
        "job.yaml:3: unknown field 'gpu'; did you mean gpus_per_node?\n"
    )
    assert not Job.objects.exists()


def test_errors_of_the_api_go_to_stderr_with_status_1(
    console: str, podium: Callable[..., Ran], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = podium("show", "999999")
    bad_state = podium("ls", "--state", "sleeping")
    monkeypatch.setenv("PODIUM_TOKEN", "pdm_0000000000000000_nope")
    unauthenticated = podium("ls")

    assert (missing.code, missing.err) == (1, "podium: Job not found.\n")
    assert bad_state.code == 1
    assert bad_state.err.startswith("podium: Unknown state 'sleeping'; one of pending")
    assert unauthenticated.code == 1
    assert unauthenticated.err.endswith("(run `podium login`)\n")


def test_logs_and_show_of_a_finished_run(
    console: str, podium: Callable[..., Ran], workspace: Workspace
) -> None:
    job = job_create(workspace, Pool.objects.get(), state=Job.State.RUNNING, gpus_per_node=2)
    allocation = job.allocations.get()
    LogLine.objects.bulk_create(
        LogLine(job=job, allocation=allocation, attempt=1, rank=0, seq=seq, at=timezone.now(),
                line=text)
        for seq, text in enumerate(["loading", "step 1 loss 2.5", "done"], start=1)
    )  # fmt: skip
    first = LogLine.objects.order_by("pk").first()
    shown = podium("show", str(job.pk))
    Job.objects.filter(pk=job.pk).update(state=Job.State.SUCCEEDED)

    printed = podium("logs", str(job.pk))
    one_rank = podium("logs", "--rank", "0", "--since", str(first.pk), str(job.pk))
    grepped = podium("logs", "--grep", "LOSS", str(job.pk))
    followed = podium("logs", "-f", str(job.pk))

    assert "  ranks\n    rank 0  gpu-1  GPUs 0,1  running" in shown.out
    assert (printed.code, printed.err) == (0, "")
    assert printed.out == "[rank 0] loading\n[rank 0] step 1 loss 2.5\n[rank 0] done\n"
    assert one_rank.out == "step 1 loss 2.5\ndone\n"
    assert grepped.out == "[rank 0] step 1 loss 2.5\n"
    assert (followed.code, followed.out) == (0, printed.out)


def test_login_checks_the_token_and_saves_it_for_the_owner_only(
    console: str, podium: Callable[..., Ran], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, token = os.environ["PODIUM_URL"], os.environ["PODIUM_TOKEN"]
    monkeypatch.delenv("PODIUM_URL")
    monkeypatch.delenv("PODIUM_TOKEN")
    assert podium("ls").err == (
        "podium: not logged in: run `podium login`, or set PODIUM_URL and PODIUM_TOKEN\n"
    )

    wrong = podium("login", "--url", url, "--token", "pdm_0000000000000000_nope")
    logged_in = podium("login", "--url", url + "/", "--token", token)

    saved = tmp_path / "config" / "podium" / "client.json"
    assert wrong.code == 1
    assert logged_in.code == 0, logged_in.err
    assert logged_in.out.startswith(f"Logged in to {url} as bob (workspaces: Vision).")
    assert json.loads(saved.read_text()) == {"url": url, "token": token}
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert podium("ls", "--all").code == 0
    monkeypatch.setenv("PODIUM_URL", "http://127.0.0.1:9")
    assert podium("ls").err.startswith("podium: cannot reach http://127.0.0.1:9:")


def test_login_with_a_password_gets_a_new_token(
    console: str, podium: Callable[..., Ran], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(commands.getpass, "getpass", lambda prompt: "correct horse battery staple")

    logged_in = podium("login", "--url", os.environ["PODIUM_URL"], "--username", "bob")

    assert logged_in.code == 0, logged_in.err
    saved = json.loads((tmp_path / "config" / "podium" / "client.json").read_text())
    assert saved["token"].startswith("pdm_")
    assert saved["token"] != os.environ["PODIUM_TOKEN"]


# Following a log, against a fake console ---------------------------------------------------


@dataclass
class FakeConsole:
    """Answers a job's log from a script of (text, cursor, state), one per request (the last
    one again and again), and fixed JSON for other paths."""

    script: list[tuple[str, int, str]]
    answers: dict[tuple[str, str], Any] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, list[str]], str | None]] = field(default_factory=list)
    url: str = ""

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urllib.parse.urlsplit(handler.path)
        query = urllib.parse.parse_qs(parts.query)
        auth = handler.headers.get("Authorization")
        self.requests.append((handler.command, parts.path, query, auth))
        if parts.path.endswith("/logs"):
            logs = [r for r in self.requests if r[1].endswith("/logs")]
            text, cursor, state = self.script[min(len(logs), len(self.script)) - 1]
            body, headers = text.encode(), {"X-Podium-Cursor": str(cursor)}
            headers |= {"X-Podium-Job-State": state, "Content-Type": "text/plain"}
        elif (handler.command, parts.path) in self.answers:
            body = json.dumps(self.answers[handler.command, parts.path]).encode()
            headers = {"Content-Type": "application/json"}
        else:
            body = json.dumps({"detail": "Not found.", "field": None}).encode()
            handler.send_response(404)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
            return
        handler.send_response(200)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)

    def log_queries(self) -> list[dict[str, list[str]]]:
        return [query for _, path, query, _ in self.requests if path.endswith("/logs")]


@pytest.fixture
def fake_console(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., FakeConsole]]:
    servers: list[ThreadingHTTPServer] = []

    def start(script: list[tuple[str, int, str]], **answers: Any) -> FakeConsole:
        fake = FakeConsole(script)
        fake.answers = {tuple(k.split(" ", 1)): v for k, v in answers.get("json", {}).items()}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.answer(self)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.answer(self)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        servers.append(server)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        fake.url = f"http://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setenv("PODIUM_URL", fake.url)
        monkeypatch.setenv("PODIUM_TOKEN", "pdm_fake")
        return fake

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_logs_print_every_page_of_what_is_there(
    fake_console: Callable[..., FakeConsole], podium: Callable[..., Ran]
) -> None:
    fake = fake_console(
        [("[rank 0] one\n[rank 1] two\n", 2, "running"), ("[rank 0] three", 3, "running"),
         ("", 3, "running")]
    )  # fmt: skip

    printed = podium("logs", "--since", "0", "7")

    assert (printed.code, printed.out) == (0, "[rank 0] one\n[rank 1] two\n[rank 0] three\n")
    assert [q["since"] for q in fake.log_queries()] == [["0"], ["2"], ["3"]]
    assert {auth for *_, auth in fake.requests} == {"Bearer pdm_fake"}


def test_following_a_log_polls_until_the_job_ends_and_nothing_more_comes(
    fake_console: Callable[..., FakeConsole], podium: Callable[..., Ran]
) -> None:
    fake = fake_console(
        [("a\n", 1, "running"), ("", 1, "running"), ("", 1, "running"), ("b\n", 2, "running"),
         ("", 2, "succeeded"), ("c\n", 3, "succeeded"), ("", 3, "succeeded")]
    )  # fmt: skip

    followed = podium("logs", "-f", "--rank", "1", "--attempt", "2", "7")

    assert (followed.code, followed.out) == (0, "a\nb\nc\n")
    queries = fake.log_queries()
    assert [q["since"][0] for q in queries] == ["0", "1", "1", "1", "2", "2", "3"]
    assert all(q["rank"] == ["1"] and q["attempt"] == ["2"] for q in queries)


def test_submit_follow_exits_1_when_the_job_fails(
    fake_console: Callable[..., FakeConsole],
    podium: Callable[..., Ran],
    job_yaml: Callable[[str], str],
) -> None:
    job = {"id": 7, "name": "sweep", "workspace": "Vision", "pool": "default", "state": "pending"}
    fake_console(
        [("boom\n", 1, "failed"), ("", 1, "failed")],
        json={
            "GET /api/workspaces": {"items": [{"id": 3, "name": "Vision"}], "count": 1},
            "POST /api/jobs": job,
            "GET /api/jobs/7": {**job, "state": "failed", "state_reason": "rank 0", "exit_code": 3},
        },
    )

    followed = podium("submit", "--follow", job_yaml(JOB))

    assert followed.code == 1
    assert (
        followed.out == "Submitted job 7 (sweep) to workspace Vision, pool default: pending\nboom\n"
    )
    assert followed.err == "Job 7 failed (rank 0), exit code 3\n"


# The podium command ------------------------------------------------------------------------


def test_bad_arguments_exit_2(podium: Callable[..., Ran]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["ls", "--limit", "0"])

    assert caught.value.code == 2


def test_the_podium_command_runs_client_commands_without_django() -> None:
    code = (
        "import sys\n"
        "import podium.cli, podium.client.commands\n"
        "forbidden = {'django', 'apps', 'console', 'channels', 'celery', 'ninja'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in forbidden))\n"
    )
    imported = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    helped = subprocess.run(
        [str(PODIUM), "submit", "--help"], capture_output=True, text=True, check=False
    )
    listed = subprocess.run(
        [str(PODIUM), "ls"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PODIUM_URL": "http://127.0.0.1:9", "PODIUM_TOKEN": "pdm_x"},
    )

    assert imported.stdout.strip() == "[]"
    assert (helped.returncode, helped.stdout.split("\n")[0]) == (
        0,
        "usage: podium submit [-h] [--workspace WORKSPACE] [--follow] [--quiet] file",
    )
    assert listed.returncode == 1
    assert listed.stderr.startswith("podium: cannot reach http://127.0.0.1:9:")
