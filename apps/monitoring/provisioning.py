"""Join tokens for the agents ``up`` starts on this machine: the local node and demo nodes.

An agent keeps its node token in its state directory (one file per node name, as
``podium.agent`` writes it). ``up`` mints a short-lived join token only for names
that have no usable credentials yet; a node an admin revoked stays revoked.
"""

import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from apps.accounts.tokens import token_mint
from apps.audit.services import audit_record
from apps.monitoring.models import JoinToken, Node
from podium.agent.protocol import JOIN_TOKEN_SCHEME

# A token ``up`` hands its own agents is used within seconds; an hour leaves room for slow starts.
LOCAL_TOKEN_LIFETIME = timedelta(hours=1)


@dataclass(frozen=True)
class LocalAgentPlan:
    """What ``up`` needs to start agents for ``names``.

    ``join_token`` is set when some names must join first; ``revoked`` lists names whose
    node an admin revoked (their agent is not started).
    """

    names: list[str]
    join_token: str | None
    revoked: list[str]


def _credentials(state_dir: Path, name: str) -> dict | None:
    try:
        return json.loads((state_dir / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None


def _node_state(state_dir: Path, name: str, server: str) -> str:
    """``joined`` (usable credentials), ``revoked`` or ``new`` for one node name."""
    stored = _credentials(state_dir, name)
    if not stored or stored.get("server") != server or not stored.get("node_id"):
        return "new"
    node = Node.objects.filter(pk=stored["node_id"]).only("revoked_at", "token_prefix").first()
    if node is None:
        return "new"
    if node.revoked_at is not None:
        return "revoked"
    return "joined" if node.token_prefix else "new"


@transaction.atomic
def local_agents_plan(*, state_dir: Path, server: str, names: list[str]) -> LocalAgentPlan:
    """Check stored credentials for ``names`` and mint one join token for those that need it."""
    states = {name: _node_state(state_dir, name, server) for name in names}
    new = [name for name, state in states.items() if state == "new"]
    revoked = [name for name, state in states.items() if state == "revoked"]
    plaintext = None
    if new:
        minted = token_mint(JOIN_TOKEN_SCHEME)
        token = JoinToken.objects.create(
            name=f"started by up for {', '.join(new)}"[:100],
            prefix=minted.prefix,
            digest=minted.digest,
            expires_at=timezone.now() + LOCAL_TOKEN_LIFETIME,
            max_uses=len(new),
        )
        audit_record(actor=None, action="join_token.create", target=token)
        plaintext = minted.plaintext
    return LocalAgentPlan(
        names=[n for n in names if n not in revoked], join_token=plaintext, revoked=revoked
    )
