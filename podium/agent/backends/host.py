"""Host readings from psutil: CPU, memory, load, root disk and network rates."""

import os
import threading
import time
from typing import Any

import psutil


class HostSampler:
    """Samples the host; rates and CPU % cover the time since the previous sample.

    ``reuse_within`` lets many simulated agents of one process share a reading: a call
    within that many seconds of the previous one returns the same dict.
    """

    def __init__(self, *, disk_path: str = "/", reuse_within: float = 0.0) -> None:
        self._disk_path = disk_path
        self._reuse_within = reuse_within
        self._lock = threading.Lock()
        self._last: dict[str, Any] | None = None
        self._last_at = 0.0
        self._net: tuple[float, int, int] | None = None
        psutil.cpu_percent(interval=None)  # primes the counter: the next call covers since now

    def sample(self) -> dict[str, Any]:
        """One HOST_READING (keys as in ``protocol.HOST_READING_KEYS``)."""
        with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last_at < self._reuse_within:
                return self._last
            reading = self._read(now)
            self._last, self._last_at = reading, now
            return reading

    def _read(self, now: float) -> dict[str, Any]:
        memory = psutil.virtual_memory()
        reading: dict[str, Any] = {
            "cpu_percent": psutil.cpu_percent(interval=None),
            "mem_used_bytes": memory.total - memory.available,
            "mem_total_bytes": memory.total,
        }
        try:
            load1, load5, load15 = os.getloadavg()
        except OSError:
            pass
        else:
            reading.update(load1=round(load1, 2), load5=round(load5, 2), load15=round(load15, 2))
        try:
            disk = psutil.disk_usage(self._disk_path)
        except OSError:
            pass
        else:
            reading.update(disk_used_bytes=disk.used, disk_total_bytes=disk.total)
        net = psutil.net_io_counters()
        if net is not None:
            previous, self._net = self._net, (now, net.bytes_recv, net.bytes_sent)
            if previous is not None and now > previous[0]:
                elapsed = now - previous[0]
                reading["net_rx_bps"] = round(max(0, net.bytes_recv - previous[1]) / elapsed)
                reading["net_tx_bps"] = round(max(0, net.bytes_sent - previous[2]) / elapsed)
        return reading
