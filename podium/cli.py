"""The ``podium`` command.

``podium agent ...`` runs the node agent in this process, without Django; the client
commands (``podium submit``, ``ls``, ``show``, ``logs``, ``cancel``, ``login``) talk to a
console's REST API from any machine. On a machine with the console installed, any other
``podium <command>`` runs that console management command (``podium up`` starts
everything). This module must not import Django or the console: it only checks they are
installed and hands over to them.
"""

import importlib.util
import os
import sys
from collections.abc import Sequence

# The client commands, which need only the REST API; they win over console commands.
CLIENT_COMMANDS = frozenset({"login", "submit", "ls", "show", "logs", "cancel"})

USAGE = """\
usage: podium <command> [options]

  podium up        start the console here (web, worker, beat, embedded Redis); Ctrl-C stops it
  podium agent     report this node's GPUs to a console (podium agent --help)

  podium login     save a console's URL and your API token
  podium submit    submit the job a YAML file describes (--follow streams its log)
  podium ls        list jobs (--all, --state S, --workspace W)
  podium show      one job: state, attempts, ranks, timeline
  podium logs      print a job's output (-f follows it)
  podium cancel    cancel a job

  podium help      list every console command
  podium <command> --help
"""


def console_installed() -> bool:
    """Whether Django and the console package can be imported by this Python."""
    return all(importlib.util.find_spec(name) is not None for name in ("django", "console"))


def main(argv: Sequence[str] | None = None) -> None:
    """Print the usage, run the agent or a client command, or replace this process with
    ``python -m console``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        sys.stdout.write(USAGE)
        return
    if args[0] == "agent":
        from podium.agent.cli import main as agent_main

        raise SystemExit(agent_main(args[1:]))
    if args[0] in CLIENT_COMMANDS:
        from podium.client.commands import main as client_main

        raise SystemExit(client_main(args))
    if not console_installed():
        sys.stderr.write(
            "podium: the console is not installed on this machine "
            "(no django or console package for this Python)\n"
        )
        raise SystemExit(2)
    sys.stdout.flush()
    # Runs this same interpreter on the console's own entry point with the user's arguments.
    os.execv(sys.executable, [sys.executable, "-m", "console", *args])  # noqa: S606
