"""Webhook alerts: signed JSON to a local endpoint, retries, failure, idempotence."""

import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.utils import timezone

from apps.monitoring.alerts import alerts_enqueue, retry_countdown
from apps.monitoring.models import AlertChannel, AlertDelivery, HealthEvent, Node
from apps.monitoring.tasks import deliver_alert
from apps.system.crypto import secret_encrypt
from tests.monitoring.factories import node_create

pytestmark = pytest.mark.django_db

SECRET = "s3cret-for-hmac"


class Webhook:
    """A local HTTP endpoint answering ``status`` and keeping what it received."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.received: list[tuple[dict[str, str], bytes]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.received.append((dict(self.headers), body))
                self.send_response(hook.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Callable[[int], Webhook]]:
    started: list[Webhook] = []

    def start(status: int = 200) -> Webhook:
        started.append(Webhook(status))
        return started[-1]

    yield start
    for hook in started:
        hook.close()


@pytest.fixture(autouse=True)
def fast_retries(settings: Any) -> None:
    settings.PODIUM = {**settings.PODIUM, "ALERT_ATTEMPTS": 3, "ALERT_RETRY_DELAY": 0}


def channel(url: str, *, secret: str = "", min_severity: str = "warning") -> AlertChannel:
    return AlertChannel.objects.create(
        name="ops", url=url, secret_encrypted=secret_encrypt(secret), min_severity=min_severity
    )


def event(node: Node, severity: str = "critical") -> HealthEvent:
    now = timezone.now()
    return HealthEvent.objects.create(
        node=node,
        gpu_index=1,
        source="xid",
        code="48",
        rule_class="gpu_reset",
        severity=severity,
        reason="XID 48 on GPU 1: double-bit ECC error",
        action="take the GPU out of the pool, requeue its job, reset the GPU",
        first_at=now,
        last_at=now,
    )


def test_an_event_is_posted_signed_to_the_webhook(
    webhook: Callable[[int], Webhook], django_capture_on_commit_callbacks: Any
) -> None:
    hook = webhook(204)
    target = channel(hook.url, secret=SECRET)
    node = node_create("gpu-node-1")

    with django_capture_on_commit_callbacks(execute=True):
        (delivery,) = alerts_enqueue(event(node))

    ((headers, body),) = hook.received
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Podium-Signature"] == expected
    assert headers["Content-Type"] == "application/json"
    payload = json.loads(body)
    assert payload["channel"] == target.name
    assert payload["event"]["node"] == "gpu-node-1"
    assert payload["event"]["code"] == "48"
    assert payload["event"]["rule_class"] == "gpu_reset"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("delivered", 1, 204)
    assert delivery.delivered_at is not None


def test_without_a_secret_nothing_is_signed(webhook: Callable[[int], Webhook]) -> None:
    hook = webhook(200)
    delivery = AlertDelivery.objects.create(event=event(node_create()), channel=channel(hook.url))

    deliver_alert.delay(delivery.pk)

    ((headers, _),) = hook.received
    assert "X-Podium-Signature" not in headers


def test_a_failing_endpoint_is_retried_then_marked_failed(
    webhook: Callable[[int], Webhook],
) -> None:
    hook = webhook(500)
    delivery = AlertDelivery.objects.create(event=event(node_create()), channel=channel(hook.url))

    deliver_alert.delay(delivery.pk)

    delivery.refresh_from_db()
    assert len(hook.received) == 3
    assert (delivery.status, delivery.attempts) == ("failed", 3)
    assert (delivery.response_code, delivery.last_error) == (500, "HTTP 500")


def test_an_unreachable_endpoint_records_the_error() -> None:
    delivery = AlertDelivery.objects.create(
        event=event(node_create()), channel=channel("http://127.0.0.1:9/nobody")
    )

    deliver_alert.delay(delivery.pk)

    delivery.refresh_from_db()
    assert delivery.status == "failed"
    assert delivery.response_code is None
    assert "URLError" in delivery.last_error


def test_a_delivered_alert_is_not_sent_again(webhook: Callable[[int], Webhook]) -> None:
    hook = webhook(200)
    delivery = AlertDelivery.objects.create(event=event(node_create()), channel=channel(hook.url))

    deliver_alert.delay(delivery.pk)
    deliver_alert.delay(delivery.pk)

    assert len(hook.received) == 1


def test_retries_wait_longer_each_time(settings: Any) -> None:
    settings.PODIUM = {**settings.PODIUM, "ALERT_RETRY_DELAY": 5}

    assert [retry_countdown(n) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]


def test_only_enabled_channels_at_or_below_the_events_severity_get_it() -> None:
    node = node_create()
    warn = channel("http://127.0.0.1:9/a", min_severity="warning")
    crit = channel("http://127.0.0.1:9/b", min_severity="critical")
    AlertChannel.objects.create(name="off", url="http://127.0.0.1:9/c", enabled=False)

    warned = alerts_enqueue(event(node, severity="warning"))
    again = alerts_enqueue(HealthEvent.objects.get())

    assert [d.channel for d in warned] == [warn]
    assert again == []
    assert crit.deliveries.count() == 0
