"""Heartbeats from the Celery worker and beat processes, beating in a background thread."""

import logging
import threading
import time
from typing import Any

from celery.signals import beat_init, before_task_publish, worker_ready, worker_shutdown
from django.conf import settings

from apps.system.heartbeats import STOPPED, heartbeat_publish
from apps.system.tasks import SENT_AT_HEADER

logger = logging.getLogger(__name__)


class HeartbeatThread(threading.Thread):
    """Publishes ``component``'s heartbeat every interval until stopped."""

    def __init__(self, component: str) -> None:
        super().__init__(name=f"podium-heartbeat-{component}", daemon=True)
        self.component = component
        self.started_at = time.time()
        self.stopping = threading.Event()

    def run(self) -> None:
        interval = settings.PODIUM["HEARTBEAT_INTERVAL"]
        failing = False
        while not self.stopping.is_set():
            try:
                heartbeat_publish(component=self.component, started_at=self.started_at)
                failing = False
            except Exception:
                if not failing:
                    logger.warning("Redis unreachable: %s heartbeat paused", self.component)
                failing = True
            self.stopping.wait(interval)

    def stop(self) -> None:
        """Stop beating and record that the process stopped."""
        self.stopping.set()
        try:
            heartbeat_publish(component=self.component, started_at=self.started_at, state=STOPPED)
        except Exception:
            logger.warning("could not record that %s stopped", self.component)


_threads: dict[str, HeartbeatThread] = {}


def _start(component: str) -> None:
    if component not in _threads:
        _threads[component] = HeartbeatThread(component)
        _threads[component].start()


@worker_ready.connect
def _worker_ready(**_: Any) -> None:
    _start("worker")


@worker_shutdown.connect
def _worker_shutdown(**_: Any) -> None:
    thread = _threads.pop("worker", None)
    if thread is not None:
        thread.stop()


@beat_init.connect
def _beat_init(**_: Any) -> None:
    _start("beat")


@before_task_publish.connect
def _stamp_probe(sender: str | None = None, headers: dict | None = None, **_: Any) -> None:
    """Stamp queue probes with their send time, so the worker can measure the trip."""
    if sender == "system.queue_probe" and headers is not None:
        headers[SENT_AT_HEADER] = time.time()
