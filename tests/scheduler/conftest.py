"""Fixtures of the scheduler tests: a pool, nodes in it, and what was sent to agents."""

from collections.abc import Callable
from typing import Any

import pytest

from apps.scheduler import broadcast
from apps.scheduler.models import Pool


class Sent:
    """Messages pushed to channel groups, by group."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []

    def commands(self, node_id: int | None = None) -> list[dict[str, Any]]:
        """Commands sent to agents (of one node, or all), in order."""
        return [
            command
            for group, m in self.messages
            if m.get("type") == "agent.commands"
            and (node_id is None or group == f"monitoring.agent.{node_id}")
            for command in m["commands"]
        ]

    def clear(self) -> None:
        self.messages.clear()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    """Record every group push instead of sending it."""
    record = Sent()
    monkeypatch.setattr(broadcast, "groups_push", record.messages.extend)
    return record


@pytest.fixture
def pool(db: None) -> Pool:
    return Pool.objects.create(name="default", is_default=True)


@pytest.fixture
def committing(django_capture_on_commit_callbacks: Any) -> Callable[..., Any]:
    """Call a function and run what it deferred to after commit, as a real commit would."""

    def call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return function(*args, **kwargs)

    return call
