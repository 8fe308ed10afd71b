"""Webhook alerts: a delivery per event and channel, POSTed as signed JSON, retried.

The body is JSON; with a channel secret, ``X-Podium-Signature: sha256=<hex>`` carries
the HMAC-SHA256 of the exact body bytes under the secret. A delivery that got a 2xx
answer is never sent again.
"""

import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.monitoring.broadcast import event_payload
from apps.monitoring.models import AlertChannel, AlertDelivery, HealthEvent
from apps.monitoring.rules import SEVERITY_RANK
from apps.system.crypto import secret_decrypt

logger = logging.getLogger(__name__)

TIMEOUT_SECONDS = 5
SIGNATURE_HEADER = "X-Podium-Signature"
USER_AGENT = "Podium-Alerts/1"
# Never through a proxy: the console talks to the webhook it was given.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def alerts_enqueue(event: HealthEvent) -> list[AlertDelivery]:
    """Create a pending delivery of ``event`` for every enabled channel it is grave enough for.

    Each is sent after commit; an event already delivered to a channel is not queued again.
    """
    from apps.monitoring.tasks import deliver_alert  # tasks import this module

    rank = SEVERITY_RANK[event.severity]
    created = []
    for channel in AlertChannel.objects.filter(enabled=True):
        if SEVERITY_RANK[channel.min_severity] > rank:
            continue
        delivery, new = AlertDelivery.objects.get_or_create(event=event, channel=channel)
        if new:
            created.append(delivery)
    for delivery in created:
        transaction.on_commit(partial(_send_later, deliver_alert, delivery.pk))
    return created


def _send_later(task: Any, delivery_id: int) -> None:
    try:
        task.delay(delivery_id)
    except Exception:
        logger.warning("could not queue alert delivery %s", delivery_id, exc_info=True)


def alert_payload(event: HealthEvent) -> dict[str, Any]:
    """What a webhook receives about an event: what watchers get, plus where and since when."""
    node = event.node
    return {
        "event": {
            **event_payload(event),
            "node": node.name,
            "node_id": node.pk,
            "workspace_id": node.workspace_id,
            "first_at": event.first_at.isoformat(),
            "simulated": node.simulated,
        },
    }


def signature(secret: str, body: bytes) -> str:
    """The signature header value of ``body`` under ``secret``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _post(url: str, body: bytes, secret: str) -> int:
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    if secret:
        headers[SIGNATURE_HEADER] = signature(secret, body)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310  (http(s) URLs only: URLField)
    with _opener.open(request, timeout=TIMEOUT_SECONDS) as response:
        return response.status


def retry_countdown(attempts: int) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones (doubling)."""
    return settings.PODIUM["ALERT_RETRY_DELAY"] * 2 ** max(0, attempts - 1)


def alert_deliver(*, delivery_id: int) -> AlertDelivery | None:
    """Make one attempt at a delivery and record it; returns it (None when gone).

    Status stays pending while attempts remain, so the caller retries it.
    """
    delivery = (
        AlertDelivery.objects.select_related("event__node", "channel")
        .filter(pk=delivery_id)
        .first()
    )
    if delivery is None or delivery.status != AlertDelivery.Status.PENDING:
        return delivery
    channel = delivery.channel
    body = json.dumps(
        {**alert_payload(delivery.event), "channel": channel.name}, separators=(",", ":")
    ).encode()
    delivery.attempts += 1
    try:
        status = _post(channel.url, body, secret_decrypt(channel.secret_encrypted))
        error = "" if 200 <= status < 300 else f"HTTP {status}"
    except urllib.error.HTTPError as exc:
        status, error = exc.code, f"HTTP {exc.code}"
    except Exception as exc:
        status, error = None, f"{type(exc).__name__}: {exc}"
    delivery.response_code = status
    delivery.last_error = error[:300]
    if not error:
        delivery.status = AlertDelivery.Status.DELIVERED
        delivery.delivered_at = timezone.now()
    elif delivery.attempts >= settings.PODIUM["ALERT_ATTEMPTS"]:
        delivery.status = AlertDelivery.Status.FAILED
    delivery.save(
        update_fields=["attempts", "response_code", "last_error", "status", "delivered_at"]
    )
    return delivery
