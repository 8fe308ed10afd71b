"""``podium login | submit | ls | show | logs | cancel``: jobs from a laptop, over the REST API.

These commands use only the console's public API, authenticated with a personal token
(``podium login`` saves one; ``PODIUM_URL`` and ``PODIUM_TOKEN`` override it). Exit status:
0 done, 1 refused (by the console, or a bad job file; the reason goes to stderr), 2 bad
arguments, 130 interrupted. ``submit --follow`` also exits 1 when the job does not succeed.
"""

import argparse
import getpass
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from podium.client.api import (
    ApiClient,
    ApiError,
    ClientConfig,
    NotConfiguredError,
    config_load,
    config_save,
    url_normalize,
)
from podium.client.spec import JobFile, SpecError, job_file_read

TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
ACTIVE_STATES = ("pending", "held", "scheduled", "starting", "running", "preempting", "stopping")
FOLLOW_INTERVAL = 1.0  # seconds between polls of a job's log while following it
TIMELINE_TAIL = 10
LOGIN_TOKEN_DAYS = 90


class UserError(Exception):
    """Something the user asked for that cannot be done, said in one line."""


def _client() -> ApiClient:
    return ApiClient(config_load())


def _write(text: str, stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    stream.write(text)
    stream.flush()


# Showing things ----------------------------------------------------------------------------


def _moment(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _when(value: str | None) -> str:
    """An API timestamp in local time, to the second; empty when there is none."""
    moment = _moment(value)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def _age(value: str | None, now: datetime) -> str:
    """How long ago: ``45s``, ``12m``, ``3h``, ``9d``."""
    moment = _moment(value)
    if moment is None:
        return ""
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _columns(rows: Sequence[Sequence[Any]]) -> list[str]:
    """The rows as lines of left-aligned columns two spaces apart."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))] if cells else []
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]


def _shape(job: dict[str, Any]) -> str:
    return f"{job['nodes']}x{job['gpus_per_node']}"


def _state(job: dict[str, Any]) -> str:
    reason = job.get("state_reason") or ""
    return f"{job['state']} ({reason})" if reason else job["state"]


# login -------------------------------------------------------------------------------------


def _ask(prompt: str, *, secret: bool = False) -> str:
    try:
        answer = getpass.getpass(prompt) if secret else input(prompt)
    except EOFError:
        answer = ""
    if not answer.strip():
        raise UserError(f"nothing given for {prompt.rstrip(': ')!r}")
    return answer if secret else answer.strip()


def _token_for(url: str, username: str) -> str:
    """A new personal token of ``username``, for the password asked here."""
    password = _ask(f"Password for {username}: ", secret=True)
    anonymous = ApiClient(ClientConfig(url=url, token=""))
    answer = anonymous.post(
        "/api/auth/token",
        {
            "username": username,
            "password": password,
            "name": f"podium CLI on {socket.gethostname()}"[:100],
            "expires_in_days": LOGIN_TOKEN_DAYS,
        },
    )
    return str(answer["token"])


def command_login(args: argparse.Namespace) -> int:
    """Check a console URL and token, then save them for the other commands."""
    url = url_normalize(args.url or _ask("Console URL: "))
    if args.token:
        token = args.token
    elif args.username:
        token = _token_for(url, args.username)
    else:
        token = _ask("API token (from the console's Tokens page): ", secret=True)
    config = ClientConfig(url=url, token=token)
    me = ApiClient(config).get("/api/auth/me")
    path = config_save(config)
    workspaces = ", ".join(w["name"] for w in me.get("workspaces", [])) or "none yet"
    _write(f"Logged in to {url} as {me['username']} (workspaces: {workspaces}).\n")
    _write(f"Saved to {path}.\n")
    return 0


# submit ------------------------------------------------------------------------------------


def workspace_resolve(client: ApiClient, ref: str | int | None) -> dict[str, Any]:
    """One of the user's workspaces, by name or id; the only one when ``ref`` is None."""
    workspaces = list(client.items("/api/workspaces"))
    names = ", ".join(w["name"] for w in workspaces) or "none"
    if ref is None:
        if len(workspaces) == 1:
            return workspaces[0]
        raise UserError(
            f"say which workspace: `workspace:` in the file or --workspace (yours: {names})"
        )
    text = str(ref).strip()
    matches: list[Callable[[dict[str, Any]], bool]] = [
        lambda w: w["name"] == text,
        lambda w: str(w["id"]) == text,
        lambda w: w["name"].casefold() == text.casefold(),
    ]
    for match in matches:
        found = [w for w in workspaces if match(w)]
        if len(found) == 1:
            return found[0]
    raise UserError(f"you have no workspace {text!r} (yours: {names})")


def _submit(client: ApiClient, job_file: JobFile, workspace_flag: str | None) -> dict[str, Any]:
    """Resolve the workspace and post the job; refusals point into the file where they can."""
    try:
        workspace = workspace_resolve(client, workspace_flag or job_file.workspace)
    except UserError as exc:
        if workspace_flag is None and job_file.workspace is not None:
            raise job_file.error(str(exc), "workspace") from None
        raise
    try:
        return dict(client.post("/api/jobs", job_file.payload(workspace["id"])))
    except ApiError as exc:
        if exc.field:
            raise job_file.error(exc.detail, exc.field) from None
        raise


def command_submit(args: argparse.Namespace) -> int:
    """Submit the job a YAML file describes; with --follow, stream its log to the end."""
    job_file = job_file_read(args.file)
    client = _client()
    job = _submit(client, job_file, args.workspace)
    if args.quiet:
        _write(f"{job['id']}\n")
    else:
        _write(
            f"Submitted job {job['id']} ({job['name']}) to workspace {job['workspace']}, "
            f"pool {job['pool']}: {job['state']}\n"
        )
    if not args.follow:
        return 0
    logs_stream(client, job["id"], follow=True)
    return _outcome(client, job["id"])


def _outcome(client: ApiClient, job_id: int) -> int:
    """Say how a finished job ended: 0 when it succeeded, else 1."""
    job = client.get(f"/api/jobs/{job_id}")
    ending = f"Job {job_id} {_state(job)}"
    if job.get("exit_code") is not None:
        ending += f", exit code {job['exit_code']}"
    _write(ending + "\n", sys.stderr)
    return 0 if job["state"] == "succeeded" else 1


# ls and show -------------------------------------------------------------------------------


def command_ls(args: argparse.Namespace) -> int:
    """List jobs, newest first: those not finished, or all of them with --all."""
    client = _client()
    workspace_id = None
    if args.workspace is not None:
        workspace_id = workspace_resolve(client, args.workspace)["id"]
    states = args.state or ([] if args.all else list(ACTIVE_STATES))
    page = client.get(
        "/api/jobs", workspace_id=workspace_id, state=",".join(states) or None, limit=args.limit
    )
    jobs = page["items"]
    if not jobs:
        finished_too = args.all or args.state
        _write(
            "No jobs.\n" if finished_too else "No unfinished jobs (--all shows all).\n", sys.stderr
        )
        return 0
    now = datetime.now(UTC)
    rows = [
        (j["id"], j["name"], j["workspace"], j["state"], _shape(j), j["pool"],
         _age(j["created_at"], now))
        for j in jobs
    ]  # fmt: skip
    headers = ("ID", "NAME", "WORKSPACE", "STATE", "GPUS", "POOL", "AGE")
    _write("\n".join(_columns([headers, *rows])) + "\n")
    if page["count"] > len(jobs):
        _write(f"({len(jobs)} of {page['count']} shown; --limit shows more)\n", sys.stderr)
    return 0


def _timeline_tail(client: ApiClient, job_id: int) -> tuple[list[dict[str, Any]], int]:
    """The job's last events, oldest first, and how many it has in all."""
    path = f"/api/jobs/{job_id}/events"
    count = client.get(path, limit=1)["count"]
    offset = max(0, count - TIMELINE_TAIL)
    return client.get(path, limit=TIMELINE_TAIL, offset=offset)["items"], count


def _job_facts(job: dict[str, Any]) -> list[tuple[str, str]]:
    procs = f", {job['procs_per_node']} processes per node" if job["procs_per_node"] else ""
    restarts = f"{job['restarts']} restart(s) of at most {job['max_restarts']}"
    by = f" by {job['submitted_by']}" if job["submitted_by"] else ""
    shape = f"{job['nodes']} node(s) x {job['gpus_per_node']} GPU(s), pool {job['pool']}"
    facts = [
        ("workspace", job["workspace"]),
        ("state", _state(job)),
        ("kind", f"{job['kind']}{procs}"),
        ("resources", shape),
        ("priority", job["priority"]),
        ("attempt", f"{job['attempt']} ({restarts})"),
        ("submitted", f"{_when(job['created_at'])}{by}"),
        ("started", _when(job["started_at"])),
        ("finished", _when(job["finished_at"])),
        ("exit code", "" if job["exit_code"] is None else str(job["exit_code"])),
        ("command", job["command"].strip().replace("\n", "\n" + " " * 13)),
    ]  # fmt: skip
    queue = job.get("queue") or {}
    if queue:
        place = f"position {queue['position']}" if queue.get("position") else "waiting"
        facts.append(("queue", f"{place}: {queue.get('reason') or ''}".rstrip(": ")))
    return [(name, value) for name, value in facts if value]


def command_show(args: argparse.Namespace) -> int:
    """One job: its state, attempts, ranks and the tail of its timeline."""
    client = _client()
    job = client.get(f"/api/jobs/{args.id}")
    lines = [f"Job {job['id']}: {job['name']}"]
    lines += [f"  {name:<11}{value}" for name, value in _job_facts(job)]
    if job["allocation"]:
        lines.append("  ranks")
        ranks = [
            (f"rank {a['rank']}", a["node"], "GPUs " + ",".join(map(str, a["gpus"])), a["state"],
             f"pid {a['pid']}" if a["pid"] else "")
            for a in job["allocation"]
        ]  # fmt: skip
        lines += ["    " + row for row in _columns(ranks)]
    events, count = _timeline_tail(client, job["id"])
    if events:
        lines.append(f"  timeline (last {len(events)} of {count})")
        timeline = [
            (_when(e["at"]), f"attempt {e['attempt']}", e["kind"], e["reason"]) for e in events
        ]
        lines += ["    " + row for row in _columns(timeline)]
    _write("\n".join(lines) + "\n")
    return 0


# logs and cancel ---------------------------------------------------------------------------


def logs_stream(
    client: ApiClient,
    job_id: int,
    *,
    since: int = 0,
    rank: int | None = None,
    attempt: int | None = None,
    grep: str | None = None,
    follow: bool = False,
) -> str:
    """Write the job's log from cursor ``since`` to stdout; the job's last known state.

    Without ``follow`` it stops once the log so far is written. With it, it polls every
    ``FOLLOW_INTERVAL`` seconds until the job has finished and one more poll brings nothing,
    so lines that arrive just after the end are not lost.
    """
    cursor = since
    settled = False
    while True:
        response = client.request(
            "GET",
            f"/api/jobs/{job_id}/logs",
            params={"since": cursor, "rank": rank, "attempt": attempt, "q": grep},
            accept="text/plain",
        )
        text = response.text()
        if text:
            _write(text if text.endswith("\n") else text + "\n")
        previous, cursor = cursor, _cursor(response.headers.get("X-Podium-Cursor"), cursor)
        state = response.headers.get("X-Podium-Job-State") or ""
        if text and cursor != previous:
            continue
        if not follow:
            return state
        state = state or client.get(f"/api/jobs/{job_id}")["state"]
        if state in TERMINAL_STATES:
            if settled:
                return state
            settled = True
        else:
            settled = False
        time.sleep(FOLLOW_INTERVAL)


def _cursor(header: str | None, current: int) -> int:
    try:
        return int(header) if header is not None else current
    except ValueError:
        return current


def command_logs(args: argparse.Namespace) -> int:
    """Print a job's output; with -f, keep printing until the job has finished."""
    logs_stream(
        _client(),
        args.id,
        since=args.since,
        rank=args.rank,
        attempt=args.attempt,
        grep=args.grep,
        follow=args.follow,
    )
    return 0


def command_cancel(args: argparse.Namespace) -> int:
    """Cancel a job: a waiting one at once, a running one after its grace period."""
    job = _client().post(f"/api/jobs/{args.id}/cancel")
    _write(f"Job {job['id']} {_state(job)}\n")
    return 0


# Arguments ---------------------------------------------------------------------------------


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is below 0")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is below 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The parser of every client command."""
    parser = argparse.ArgumentParser(
        prog="podium",
        description="Submit and follow jobs on a Podium console through its REST API.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    login = commands.add_parser("login", help="save the console's URL and your API token")
    login.add_argument("--url", help="the console's URL, e.g. https://podium.example")
    login.add_argument("--token", help="a personal API token (asked when not given)")
    login.add_argument(
        "--username", help="get a new token with this user's password instead of pasting one"
    )
    login.set_defaults(run=command_login)

    submit = commands.add_parser("submit", help="submit the job a YAML file describes")
    submit.add_argument("file", help="the job file (see docs/cli.md)")
    submit.add_argument("--workspace", "-w", help="workspace name or id (overrides the file)")
    submit.add_argument("--follow", "-f", action="store_true", help="stream its log until it ends")
    submit.add_argument("--quiet", "-q", action="store_true", help="print only the job's id")
    submit.set_defaults(run=command_submit)

    ls = commands.add_parser("ls", help="list jobs, newest first")
    ls.add_argument("--workspace", "-w", help="only this workspace (name or id)")
    ls.add_argument(
        "--state", "-s", action="append", help="only jobs in this state (repeat or use commas)"
    )
    ls.add_argument("--all", "-a", action="store_true", help="finished jobs too")
    ls.add_argument("--limit", "-n", type=_positive, default=50, help="at most N jobs (50)")
    ls.set_defaults(run=command_ls)

    show = commands.add_parser("show", help="a job's state, attempts, ranks and timeline")
    show.add_argument("id", type=int)
    show.set_defaults(run=command_show)

    logs = commands.add_parser("logs", help="print a job's output")
    logs.add_argument("id", type=int)
    logs.add_argument(
        "--follow", "-f", action="store_true", help="keep printing until the job ends"
    )
    logs.add_argument("--rank", "-r", type=_count, help="only this node rank, without prefix")
    logs.add_argument("--attempt", type=_positive, help="this attempt (default: the current)")
    logs.add_argument("--grep", "-g", metavar="TEXT", help="only lines containing TEXT")
    logs.add_argument(
        "--since", type=_count, default=0, metavar="SEQ", help="start after this cursor"
    )
    logs.set_defaults(run=command_logs)

    cancel = commands.add_parser("cancel", help="cancel a job")
    cancel.add_argument("id", type=int)
    cancel.set_defaults(run=command_cancel)
    return parser


def _failure(exc: Exception) -> str:
    if isinstance(exc, SpecError):
        return str(exc)
    if isinstance(exc, ApiError) and exc.status == 401:
        return f"podium: {exc.detail} (run `podium login`)"
    return f"podium: {exc}"


def main(argv: Sequence[str]) -> int:
    """Run one client command (``argv`` starts with its name); the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (SpecError, ApiError, NotConfiguredError, UserError) as exc:
        _write(_failure(exc) + "\n", sys.stderr)
        return 1
    except KeyboardInterrupt:
        _write("\n", sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``podium logs ID | head``): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
