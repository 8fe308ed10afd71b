"""Agent protocol messages and credentials for tests of the console's agent side."""

import time
from datetime import datetime
from typing import Any

from apps.accounts.models import Workspace
from apps.accounts.tokens import token_mint
from apps.monitoring.models import JoinToken, Node
from podium.agent.protocol import JOIN_TOKEN_SCHEME, NODE_TOKEN_SCHEME, PROTOCOL_VERSION


def join_token_make(
    *,
    workspace: Workspace | None = None,
    max_uses: int | None = None,
    expires_at: datetime | None = None,
    revoked_at: datetime | None = None,
) -> tuple[JoinToken, str]:
    """A join token row and its plaintext."""
    minted = token_mint(JOIN_TOKEN_SCHEME)
    join = JoinToken.objects.create(
        name="rack 1",
        workspace=workspace,
        prefix=minted.prefix,
        digest=minted.digest,
        max_uses=max_uses,
        expires_at=expires_at,
        revoked_at=revoked_at,
    )
    return join, minted.plaintext


def node_token_give(node: Node) -> str:
    """Give ``node`` a fresh node token; returns its plaintext."""
    minted = token_mint(NODE_TOKEN_SCHEME)
    Node.objects.filter(pk=node.pk).update(token_prefix=minted.prefix, token_digest=minted.digest)
    return minted.plaintext


def hello(
    name: str = "gpu-node-1", *, gpus: int = 2, machine_id: str = "m-1", **extra: Any
) -> dict:
    """A hello of a simulated node with ``gpus`` GPUs."""
    return {
        "type": "hello",
        "protocol": PROTOCOL_VERSION,
        "name": name,
        "machine_id": machine_id,
        "agent_version": "0.1.0",
        "backend": "simulated",
        "gpu_status": "",
        "facts": {"hostname": name, "cpu_count": 16, "os": "Linux", "kernel": "6.8"},
        "gpus": [
            {
                "index": i,
                "uuid": f"GPU-{name}-{i}",
                "name": "H100 80GB (simulated)",
                "serial": f"S{i}",
                "memory_total_mib": 81559,
                "pci_bus_id": f"00000000:{i + 1:02X}:00.0",
                "nvlink_peers": [],
                "simulated": True,
            }
            for i in range(gpus)
        ],
        "time": time.time(),
        **extra,
    }


def reading(i: int, **values: Any) -> dict:
    """A normal GPU reading, overridden by ``values``."""
    return {
        "i": i,
        "util": 50.0,
        "mem_used_mib": 40779.5,
        "mem_total_mib": 81559,
        "temp_c": 60.0,
        "temp_slowdown_c": 90.0,
        "power_w": 350.0,
        "power_limit_w": 700.0,
        "throttle": 0,
        "ecc_sbe": 0,
        "ecc_dbe": 0,
        **values,
    }


def batch(
    seq: int,
    *,
    ts: float | None = None,
    gpus: int = 2,
    readings: list[dict] | None = None,
    events: list[dict] | None = None,
    replay: bool = False,
) -> dict:
    """A telemetry batch of ``gpus`` normal readings (or ``readings``)."""
    return {
        "type": "batch",
        "seq": seq,
        "ts": time.time() if ts is None else ts,
        "replay": replay,
        "gpus": readings if readings is not None else [reading(i) for i in range(gpus)],
        "host": {"cpu_percent": 12.5, "mem_used_bytes": 4 * 2**30, "mem_total_bytes": 16 * 2**30},
        "events": events or [],
    }


def xid_event(code: int, gpu: int = 0, detail: str = "") -> dict:
    """An XID event as the agent reports it."""
    return {"kind": "xid", "gpu": gpu, "code": code, "ts": time.time(), "detail": detail}
