"""The NVML event thread: XID, ECC and other device events, turned into EVENT dicts.

Every GPU is registered on one event set for the events it supports among
``WANTED_EVENTS`` (``nvmlDeviceGetSupportedEventTypes`` masked with what we want); a
daemon thread then waits on the set (``nvmlEventSetWait``, where ``NVMLError_Timeout``
just means nothing happened) and hands each event to a callback.
"""

import ctypes
import logging
import threading
from collections.abc import Callable
from typing import Any

import pynvml

log = logging.getLogger(__name__)

# NVML event masks (nvmlEventType*; gpu-health.md) and the EVENT kind each becomes. DRAM
# page retirement (0x400) has no event kind: the retired-page count is in every reading.
EVENT_KINDS = (
    (0x8, "xid"),  # XID critical error; eventData is the XID
    (0x1, "ecc_sbe"),  # single-bit ECC error
    (0x2, "ecc_dbe"),  # double-bit ECC error
    (0x800, "remap_failure"),  # DRAM retirement / row-remap failure
    (0x4000, "gpu_lost"),  # GPU unavailable
    (0x8000, "recovery_action"),  # recovery action; eventData is the action
)
WANTED_EVENTS = sum(mask for mask, _ in EVENT_KINDS)
_DETAILS = {
    "ecc_sbe": "single-bit ECC error",
    "ecc_dbe": "double-bit ECC error",
    "remap_failure": "DRAM retirement or row-remap failure",
    "gpu_lost": "GPU unavailable",
}
# NVML's recovery actions (nvmlDeviceGpuRecoveryAction_t), named in event details.
RECOVERY_ACTIONS = {
    0: "NONE",
    1: "GPU_RESET",
    2: "NODE_REBOOT",
    3: "DRAIN_P2P",
    4: "DRAIN_AND_RESET",
    5: "RECOVER_IMEX_DOMAIN",
    6: "BUS_RESET",
    7: "SYSTEM_REBOOT",
}

# Called with (kind, gpu index or None, code or None, detail).
EventCallback = Callable[[str, int | None, int | None, str], None]


def _handle_key(handle: Any) -> int:
    """A hashable key for a device handle (its pointer value, or its identity)."""
    try:
        return ctypes.cast(handle, ctypes.c_void_p).value or 0
    except (ctypes.ArgumentError, TypeError):
        return id(handle)


class EventWatcher:
    """Watches the NVML events of some GPUs (index -> handle) in a daemon thread."""

    def __init__(self, handles: dict[int, Any], on_event: EventCallback, *, wait_ms: int) -> None:
        self._handles = handles
        self._indexes = {_handle_key(handle): index for index, handle in handles.items()}
        self._on_event = on_event
        self._wait_ms = wait_ms
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nvml-events", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end and wait for it (at most one wait and a second)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._wait_ms / 1000 + 1.0)

    def _register(self, event_set: Any) -> int:
        """Register every GPU for the wanted events it supports; returns how many took."""
        registered = 0
        for index, handle in self._handles.items():
            try:
                mask = WANTED_EVENTS & pynvml.nvmlDeviceGetSupportedEventTypes(handle)
                if mask:
                    pynvml.nvmlDeviceRegisterEvents(handle, mask, event_set)
                    registered += 1
            except pynvml.NVMLError as exc:
                log.info("GPU %d: no NVML events: %s", index, exc)
        return registered

    def _run(self) -> None:
        try:
            event_set = pynvml.nvmlEventSetCreate()
        except pynvml.NVMLError as exc:
            log.info("NVML events are not available: %s", exc)
            return
        try:
            if not self._register(event_set):
                return
            while not self._stop.is_set():
                try:
                    data = pynvml.nvmlEventSetWait(event_set, self._wait_ms)
                except pynvml.NVMLError_Timeout:
                    continue
                except pynvml.NVMLError as exc:
                    log.warning("NVML event wait failed: %s", exc)
                    self._stop.wait(1.0)
                    continue
                self._dispatch(data)
        finally:
            try:
                pynvml.nvmlEventSetFree(event_set)
            except pynvml.NVMLError as exc:
                log.debug("NVML event set free failed: %s", exc)

    def _dispatch(self, data: Any) -> None:
        """Turn one NVML event into EVENT callbacks (XIDs carry their code)."""
        gpu = self._indexes.get(_handle_key(data.device))
        for mask, kind in EVENT_KINDS:
            if not data.eventType & mask:
                continue
            if kind == "xid":
                code = int(data.eventData)
                self._on_event(kind, gpu, code, f"XID {code}")
            elif kind == "recovery_action":
                code = int(data.eventData)
                name = RECOVERY_ACTIONS.get(code, str(code))
                self._on_event(kind, gpu, code, f"NVML asks for {name}")
            else:
                self._on_event(kind, gpu, None, _DETAILS[kind])
