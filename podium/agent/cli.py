"""``podium agent``: run the node agent (or a fleet of simulated ones) in this process.

Exit status: 0 after SIGTERM/SIGINT, 2 for bad arguments, 78 when the console refused the
node (revoked, bad token, name taken), so a supervisor knows not to restart it.
"""

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from podium.agent.backends import GpuBackend
from podium.agent.backends.host import HostSampler
from podium.agent.backends.nvml import nvml_open
from podium.agent.backends.simulated import DEFAULT_MODEL, WORKLOADS, SimulatedBackend
from podium.agent.client import (
    DEFAULT_INTERVAL,
    EXIT_OK,
    EXIT_REFUSED,
    Agent,
    AgentSettings,
    agent_url,
)
from podium.agent.facts import host_facts, node_machine_id
from podium.agent.state import CredentialStore, machine_id, state_dir_default

log = logging.getLogger("podium.agent")

FLEET_GPUS = 8
MAX_GPUS = 64
BUFFER_SIZE = 3600  # an hour of batches at 1 Hz, about 12 MB for 8 GPUs
FLEET_BUFFER_SIZE = 300  # five minutes per simulated node keeps a big fleet small


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``podium agent``."""
    parser = argparse.ArgumentParser(
        prog="podium agent",
        description=(
            "Report this node's GPUs and host to a Podium console over one websocket. "
            "The first start joins with a join token; the node token the console returns "
            "is kept in the state directory and used from then on."
        ),
    )
    parser.add_argument(
        "--server",
        default=os.environ.get("PODIUM_SERVER"),
        help="the console's URL, e.g. https://podium.example.com (env PODIUM_SERVER)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("PODIUM_AGENT_TOKEN"),
        help="a join token from the console (env PODIUM_AGENT_TOKEN); "
        "not needed once the node has joined",
    )
    parser.add_argument("--name", default=socket.gethostname(), help="node name (the hostname)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where node credentials are kept (env PODIUM_AGENT_STATE_DIR, "
        "default ~/.local/state/podium-agent)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=None,
        help="seconds between batches (default: what the console asks, else 1)",
    )
    parser.add_argument(
        "--simulate-gpus",
        type=int,
        default=None,
        metavar="N",
        help=f"report N simulated GPUs instead of real ones ({FLEET_GPUS} with --fleet)",
    )
    parser.add_argument(
        "--gpu-model", default=DEFAULT_MODEL, help=f"simulated GPU model ({DEFAULT_MODEL!r})"
    )
    parser.add_argument(
        "--fleet",
        type=int,
        default=0,
        metavar="N",
        help="run N simulated nodes named NAME-1..NAME-N in this process",
    )
    parser.add_argument(
        "--workload",
        choices=WORKLOADS,
        default="idle",
        help="what simulated GPUs do when no job runs on them (idle)",
    )
    parser.add_argument(
        "--replay-rate",
        type=float,
        default=15.0,
        help="batches per second sent when catching up after a reconnect (15)",
    )
    parser.add_argument(
        "--replay-burst",
        type=int,
        default=100,
        help="batches sent at once before the replay rate applies (100)",
    )
    parser.add_argument(
        "--buffer-size",
        type=int,
        default=None,
        help="unacknowledged batches kept for replay; older ones are dropped "
        f"({BUFFER_SIZE}, {FLEET_BUFFER_SIZE} per node with --fleet)",
    )
    parser.add_argument(
        "--log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default="INFO",
        type=str.upper,
    )
    return parser


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """Validate the arguments (exiting with status 2 on an error); returns the node names."""
    if not args.server:
        parser.error("--server is required (or set PODIUM_SERVER)")
    try:
        agent_url(args.server)
    except ValueError as exc:
        parser.error(f"--server: {exc}")
    if args.interval is not None and args.interval <= 0:
        parser.error("--interval must be a positive number of seconds")
    if args.fleet < 0:
        parser.error("--fleet must be 0 or more")
    if args.fleet and args.simulate_gpus is None:
        args.simulate_gpus = FLEET_GPUS
    if args.simulate_gpus is not None and not 0 <= args.simulate_gpus <= MAX_GPUS:
        parser.error(f"--simulate-gpus must be between 0 and {MAX_GPUS}")
    if args.fleet and not args.simulate_gpus:
        parser.error("--fleet runs simulated nodes: --simulate-gpus must be at least 1")
    if args.buffer_size is None:
        args.buffer_size = FLEET_BUFFER_SIZE if args.fleet else BUFFER_SIZE
    if args.replay_rate <= 0 or args.replay_burst < 1 or args.buffer_size < 1:
        parser.error("--replay-rate, --replay-burst and --buffer-size must be positive")
    names = [f"{args.name}-{n}" for n in range(1, args.fleet + 1)] if args.fleet else [args.name]
    args.state_dir = (args.state_dir or state_dir_default()).expanduser()
    for name in names:
        try:
            store = CredentialStore(args.state_dir, name)
        except ValueError as exc:
            parser.error(f"--name: {exc}")
        if not args.token and store.load(args.server) is None:
            parser.error(
                f"node {name} has not joined {args.server} yet: give a join token with "
                "--token (or PODIUM_AGENT_TOKEN)"
            )
    return names


def _settings(args: argparse.Namespace, name: str, start_delay: float = 0.0) -> AgentSettings:
    return AgentSettings(
        server=args.server,
        name=name,
        state_dir=args.state_dir,
        join_token=args.token,
        interval=args.interval,
        buffer_size=args.buffer_size,
        replay_rate=args.replay_rate,
        replay_burst=args.replay_burst,
        start_delay=start_delay,
    )


def _agents(args: argparse.Namespace, names: list[str]) -> list[Agent]:
    """One agent per node name; a fleet shares the host sampler and the facts."""
    interval = args.interval or DEFAULT_INTERVAL
    host = HostSampler(reuse_within=interval / 2 if args.fleet else 0.0)
    facts = host_facts()
    machine = machine_id(args.state_dir)
    agents = []
    for position, name in enumerate(names):
        backend: GpuBackend
        if args.simulate_gpus:
            backend = SimulatedBackend(
                node_name=name,
                count=args.simulate_gpus,
                model=args.gpu_model,
                workload=args.workload,
            )
            node_machine = node_machine_id(machine, name)
        else:
            backend = nvml_open()
            node_machine = machine
        description = backend.describe()
        if description.gpu_status:
            log.warning("%s: %s; reporting the host only", name, description.gpu_status)
        delay = interval * position / len(names)
        agents.append(
            Agent(
                _settings(args, name, delay),
                backend=backend,
                host=host,
                facts=facts,
                machine_id=node_machine,
            )
        )
    return agents


async def run_agents(agents: Sequence[Agent]) -> int:
    """Run the agents until they are stopped (0) or the console refused them all (78).

    SIGTERM and SIGINT stop every agent; a refused agent ends while the others go on.
    """
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for agent in agents:
            agent.stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    try:
        results = await asyncio.gather(*(agent.run() for agent in agents))
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        for agent in agents:
            await asyncio.to_thread(agent.backend.close)
    if any(agent.stopping for agent in agents) or all(r == EXIT_OK for r in results):
        return EXIT_OK
    return EXIT_REFUSED


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and run until stopped; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    names = _check(parser, args)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    agents = _agents(args, names)
    if args.fleet:
        log.info("running %d simulated nodes of %d GPUs", len(agents), args.simulate_gpus)
    return asyncio.run(run_agents(agents))
