"""Real GPUs through NVML (the ``nvidia-ml-py`` package, module ``pynvml``).

Every NVML function is looked up on the ``pynvml`` module when it is called, so a driver
older than the binding (a missing symbol, ``FunctionNotFound``) falls back to the older
call, and tests can replace the functions with fakes. A reading NVML does not support is
left out of the GPU's reading, never reported as zero, and is not asked for again; a GPU
that stops answering (``GpuIsLost``) reads ``{"i": n, "lost": true}`` and raises one
``gpu_lost`` event, while the other GPUs are sampled as usual. ``NVMLError`` instances
define ``__eq__`` without ``__hash__``: they never go into sets or dict keys here.

XID, ECC, row-remap failure, GPU-unavailable and recovery-action events arrive through an
NVML event set watched by a daemon thread (``nvml_events``); they are queued for the next
batch with those found while sampling.
"""

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import psutil
import pynvml

from podium.agent.backends import NO_DRIVER, Description, GpuBackend
from podium.agent.backends.nvml_events import RECOVERY_ACTIONS, EventWatcher

log = logging.getLogger(__name__)

_NVLINK_DEVICE_TYPE_SWITCH = 2

# Field values read in one nvmlDeviceGetFieldValues call per GPU: the pynvml constant,
# the reading key, and the factor to the protocol's unit (mW -> W, mJ -> J).
_FIELDS = (
    ("NVML_FI_DEV_POWER_INSTANT", "power_w", 0.001),
    ("NVML_FI_DEV_POWER_CURRENT_LIMIT", "power_limit_w", 0.001),
    ("NVML_FI_DEV_TEMPERATURE_SLOWDOWN_TLIMIT", "temp_slowdown_c", 1),
    ("NVML_FI_DEV_MEMORY_TEMP", "mem_temp_c", 1),
    ("NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "energy_j", 0.001),
    ("NVML_FI_DEV_ECC_SBE_VOL_TOTAL", "ecc_sbe", 1),
    ("NVML_FI_DEV_ECC_DBE_VOL_TOTAL", "ecc_dbe", 1),
    ("NVML_FI_DEV_PCIE_REPLAY_COUNTER", "pcie_replay", 1),
    ("NVML_FI_DEV_REMAPPED_PENDING", "remap_pending", 1),
    ("NVML_FI_DEV_REMAPPED_FAILURE", "remap_failure", 1),
    ("NVML_FI_DEV_RETIRED_SBE", "retired_sbe", 1),
    ("NVML_FI_DEV_RETIRED_DBE", "retired_dbe", 1),
    ("NVML_FI_DEV_GET_GPU_RECOVERY_ACTION", "recovery_action", 1),
)
_BOOLEAN_FIELDS = ("remap_pending", "remap_failure")
# c_nvmlValue_t member for each NVML_VALUE_TYPE_*.
_VALUE_MEMBERS = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")
# Getters for a field-value key when the field (or the batch call) is not available:
# (key, function name, extra arguments after the handle, factor).
_FIELD_FALLBACKS: tuple[tuple[str, str, Callable[[], tuple[Any, ...]], float], ...] = (
    ("power_w", "nvmlDeviceGetPowerUsage", lambda: (), 0.001),
    ("power_limit_w", "nvmlDeviceGetEnforcedPowerLimit", lambda: (), 0.001),
    (
        "temp_slowdown_c",
        "nvmlDeviceGetTemperatureThreshold",
        lambda: (pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN,),
        1,
    ),
    ("energy_j", "nvmlDeviceGetTotalEnergyConsumption", lambda: (), 0.001),
    (
        "ecc_sbe",
        "nvmlDeviceGetTotalEccErrors",
        lambda: (pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_VOLATILE_ECC),
        1,
    ),
    (
        "ecc_dbe",
        "nvmlDeviceGetTotalEccErrors",
        lambda: (pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC),
        1,
    ),
    ("pcie_replay", "nvmlDeviceGetPcieReplayCounter", lambda: (), 1),
)
_HANDLE_RETRY_S = 30.0


def _missing_symbol_errors() -> tuple[type[Exception], ...]:
    """Errors meaning "this driver has no such function": try the older one."""
    errors: list[type[Exception]] = [pynvml.NVMLError_FunctionNotFound]
    mismatch = getattr(pynvml, "NVMLLibraryMismatchError", None)
    if mismatch is not None:
        errors.append(mismatch)
    return tuple(errors)


def _text(value: Any) -> str:
    """NVML strings arrive as str or bytes depending on the binding."""
    if isinstance(value, bytes):
        return value.decode(errors="replace").strip("\x00")
    return str(value)


def _bus_key(bus_id: Any) -> tuple[int, str]:
    """A PCI bus id comparable across spellings ("00000000:18:00.0" == "0000:18:00.0")."""
    text = _text(bus_id).strip().lower()
    domain, _, rest = text.partition(":")
    try:
        return int(domain, 16), rest
    except ValueError:
        return 0, text


def _cuda_version(value: int) -> str:
    """NVML's CUDA driver version integer (12040) as "12.4"."""
    return f"{value // 1000}.{value % 1000 // 10}"


class _Device:
    """One GPU: its cached handle and what NVML told us it cannot do."""

    __slots__ = (
        "bus_id",
        "handle",
        "index",
        "links",
        "lost",
        "memory_v2",
        "recovery_action",
        "retry_at",
        "skip_fields",
        "unsupported",
        "uuid",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.handle: Any = None
        self.uuid = ""
        self.bus_id = ""
        self.links: list[int] = []  # NVLink links that were up when the agent started
        self.lost = False
        self.memory_v2 = True
        self.recovery_action = 0
        self.retry_at = 0.0
        self.skip_fields: set[Any] = set()  # field requests answered NOT_SUPPORTED
        self.unsupported: set[str] = set()  # reading keys NVML cannot give for this GPU


def nvml_open(*, watch_events: bool = True, event_wait_ms: int = 500) -> GpuBackend:
    """The NVML backend, or a GPU-less backend saying why NVML is not usable here."""
    try:
        pynvml.nvmlInit()
    except (pynvml.NVMLError_LibraryNotFound, pynvml.NVMLError_DriverNotLoaded):
        return GpuBackend(NO_DRIVER)
    except pynvml.NVMLError as exc:
        return GpuBackend(f"NVML did not start: {exc}")
    try:
        count = pynvml.nvmlDeviceGetCount()
    except pynvml.NVMLError as exc:
        pynvml.nvmlShutdown()
        return GpuBackend(f"NVML could not count the GPUs: {exc}")
    return NvmlBackend(count=count, watch_events=watch_events, event_wait_ms=event_wait_ms)


class NvmlBackend(GpuBackend):
    """Samples ``count`` GPUs through an initialised NVML; ``close`` shuts NVML down."""

    def __init__(self, *, count: int, watch_events: bool = True, event_wait_ms: int = 500) -> None:
        super().__init__(status="" if count else "the NVIDIA driver sees no GPU")
        self._missing_symbol = _missing_symbol_errors()
        self._fields: dict[int, tuple[str, float]] = {}
        for constant, key, factor in _FIELDS:
            field_id = getattr(pynvml, constant, None)
            if field_id is not None:
                self._fields[field_id] = (key, factor)
        self._nvlink_state_field = getattr(pynvml, "NVML_FI_DEV_NVLINK_GET_STATE", None)
        self._devices = [_Device(index) for index in range(count)]
        self._events: deque[dict[str, Any]] = deque(maxlen=1000)
        self._events_lock = threading.Lock()
        self._users: dict[int, tuple[str, str]] = {}
        self._peers: dict[int, list[str]] = {}
        for device in self._devices:
            self._open_handle(device)
        self._find_nvlink_peers()
        self._watcher: EventWatcher | None = None
        if watch_events and count:
            handles = {d.index: d.handle for d in self._devices if d.handle is not None}
            self._watcher = EventWatcher(handles, self._queue_event, wait_ms=event_wait_ms)
            self._watcher.start()

    # Handles and facts -------------------------------------------------------------------

    def _open_handle(self, device: _Device) -> None:
        try:
            device.handle = pynvml.nvmlDeviceGetHandleByIndex(device.index)
        except pynvml.NVMLError as exc:
            device.lost = isinstance(exc, pynvml.NVMLError_GpuIsLost)
            device.retry_at = time.monotonic() + _HANDLE_RETRY_S
            log.warning("GPU %d: NVML gives no handle: %s", device.index, exc)
            return
        device.uuid = _text(self._fact("nvmlDeviceGetUUID", device.handle) or "")
        pci = self._fact("nvmlDeviceGetPciInfo", device.handle)
        device.bus_id = _text(pci.busId) if pci is not None else ""

    @staticmethod
    def _fact(name: str, *args: Any) -> Any:
        """A value read once for the description; None when NVML cannot give it."""
        function = getattr(pynvml, name, None)
        if function is None:
            return None
        try:
            return function(*args)
        except pynvml.NVMLError:
            return None

    def _find_nvlink_peers(self) -> None:
        """Record each GPU's active links and the UUIDs of the GPUs at their other ends."""
        link_state = getattr(pynvml, "nvmlDeviceGetNvLinkState", None)
        if link_state is None:
            return
        by_bus = {_bus_key(d.bus_id): d.uuid for d in self._devices if d.bus_id}
        switched: list[_Device] = []
        for device in self._devices:
            if device.handle is None:
                continue
            peers: list[str] = []
            on_switch = False
            for link in range(getattr(pynvml, "NVML_NVLINK_MAX_LINKS", 18)):
                try:
                    active = link_state(device.handle, link)
                except (
                    pynvml.NVMLError_NotSupported,
                    pynvml.NVMLError_InvalidArgument,
                    *self._missing_symbol,
                ):
                    break  # no NVLink here, or past the last link
                except pynvml.NVMLError:
                    continue
                if not active:
                    continue
                device.links.append(link)
                remote_type = self._fact("nvmlDeviceGetNvLinkRemoteDeviceType", device.handle, link)
                if remote_type == _NVLINK_DEVICE_TYPE_SWITCH:
                    on_switch = True
                    continue
                pci = self._fact("nvmlDeviceGetNvLinkRemotePciInfo", device.handle, link)
                peer = by_bus.get(_bus_key(pci.busId)) if pci is not None else None
                if peer and peer != device.uuid and peer not in peers:
                    peers.append(peer)
            if on_switch:
                switched.append(device)
            self._peers[device.index] = peers
        for device in switched:  # an NVSwitch fabric connects every switched GPU
            for other in switched:
                if other is not device and other.uuid not in self._peers[device.index]:
                    self._peers[device.index].append(other.uuid)

    def describe(self) -> Description:
        """Driver and CUDA versions and, per GPU, UUID, name, serial, memory, bus, peers."""
        driver = self._fact("nvmlSystemGetDriverVersion")
        cuda = self._fact("nvmlSystemGetCudaDriverVersion_v2")
        if cuda is None:
            cuda = self._fact("nvmlSystemGetCudaDriverVersion")
        gpus = []
        for device in self._devices:
            handle = device.handle
            memory = name = serial = None
            if handle is not None:
                memory = self._fact("nvmlDeviceGetMemoryInfo", handle)
                name = self._fact("nvmlDeviceGetName", handle)
                serial = self._fact("nvmlDeviceGetSerial", handle)
            gpus.append(
                {
                    "index": device.index,
                    "uuid": device.uuid,
                    "name": _text(name or ""),
                    "serial": _text(serial or ""),
                    "memory_total_mib": memory.total // 2**20 if memory is not None else None,
                    "pci_bus_id": device.bus_id,
                    "nvlink_peers": self._peers.get(device.index, []),
                    "simulated": False,
                }
            )
        return Description(
            backend="nvml",
            gpu_status=self._status,
            gpus=gpus,
            driver_version=_text(driver) if driver is not None else "",
            cuda_version=_cuda_version(cuda) if isinstance(cuda, int) else "",
        )

    # Sampling ----------------------------------------------------------------------------

    def _get(self, device: _Device, key: str, calls: Sequence[tuple[str, tuple[Any, ...]]]) -> Any:
        """The first answer among ``calls`` (newest first); None when not available.

        A missing symbol moves on to the next call; NotSupported marks ``key`` as never
        available on this GPU; GpuIsLost propagates to the caller.
        """
        if key in device.unsupported:
            return None
        for name, args in calls:
            function = getattr(pynvml, name, None)
            if function is None:
                continue
            try:
                return function(device.handle, *args)
            except pynvml.NVMLError_GpuIsLost:
                raise
            except self._missing_symbol:
                continue
            except pynvml.NVMLError_NotSupported:
                break
            except pynvml.NVMLError as exc:
                log.debug("GPU %d: %s failed: %s", device.index, name, exc)
                return None
        device.unsupported.add(key)
        return None

    def _memory(self, device: _Device) -> Any:
        """Memory info, version 2 (used excludes reserved) when the driver has it."""
        version = getattr(pynvml, "nvmlMemory_v2", None)
        if device.memory_v2 and version is not None:
            try:
                return pynvml.nvmlDeviceGetMemoryInfo(device.handle, version=version)
            except pynvml.NVMLError_GpuIsLost:
                raise
            except (pynvml.NVMLError_NotSupported, TypeError, *self._missing_symbol):
                device.memory_v2 = False
            except pynvml.NVMLError as exc:
                log.debug("GPU %d: memory info failed: %s", device.index, exc)
                return None
        return self._get(device, "memory", [("nvmlDeviceGetMemoryInfo", ())])

    def _field_values(self, device: _Device) -> dict[str, Any]:
        """Field-value readings of one GPU in one NVML call, keyed by reading key."""
        if "field_values" in device.unsupported:
            return {}
        requests: list[Any] = [f for f in self._fields if f not in device.skip_fields]
        if self._nvlink_state_field is not None:
            requests += [
                (self._nvlink_state_field, link)
                for link in device.links
                if (self._nvlink_state_field, link) not in device.skip_fields
            ]
        if not requests:
            return {}
        values = self._get(device, "field_values", [("nvmlDeviceGetFieldValues", (requests,))])
        if values is None:
            return {}
        found: dict[str, Any] = {}
        links_down = None
        for request, field in zip(requests, values, strict=False):
            status = field.nvmlReturn
            if status == pynvml.NVML_ERROR_GPU_IS_LOST:
                raise pynvml.NVMLError_GpuIsLost()
            if status != pynvml.NVML_SUCCESS:
                if status == pynvml.NVML_ERROR_NOT_SUPPORTED:
                    device.skip_fields.add(request)
                continue
            member = _VALUE_MEMBERS[field.valueType] if field.valueType < 7 else "ullVal"
            value = getattr(field.value, member)
            if isinstance(request, tuple):
                links_down = (links_down or 0) + (0 if value else 1)
                continue
            key, factor = self._fields[request]
            found[key] = value * factor if factor != 1 else value
        if links_down is not None:
            found["nvlink_down"] = links_down
        return found

    def _links_down(self, device: _Device) -> int | None:
        """Links up at start and down now, asked one by one (older drivers)."""
        down, answered = 0, False
        for link in device.links:
            active = self._get(device, f"nvlink{link}", [("nvmlDeviceGetNvLinkState", (link,))])
            if active is not None:
                answered = True
                down += 0 if active else 1
        return down if answered else None

    def _processes(self, device: _Device) -> list[dict[str, Any]] | None:
        processes = self._get(
            device,
            "procs",
            [
                ("nvmlDeviceGetComputeRunningProcesses", ()),
                ("nvmlDeviceGetComputeRunningProcesses_v2", ()),
            ],
        )
        if processes is None:
            return None
        found = []
        for process in processes:
            name, user = self._users.get(process.pid) or self._owner(process.pid)
            used = getattr(process, "usedGpuMemory", None)
            found.append(
                {
                    "pid": process.pid,
                    "name": name,
                    "user": user,
                    "mem_mib": used // 2**20 if isinstance(used, int) else None,
                }
            )
        return found

    def _owner(self, pid: int) -> tuple[str, str]:
        """The name and user of a process (empty when it is gone or hidden), cached."""
        try:
            process = psutil.Process(pid)
            owner = (process.name(), process.username())
        except (psutil.Error, KeyError):
            owner = ("", "")
        self._users[pid] = owner
        return owner

    def _sample_device(self, device: _Device) -> dict[str, Any]:
        reading: dict[str, Any] = {"i": device.index}
        fields = self._field_values(device)
        for key, name, extra, factor in _FIELD_FALLBACKS:
            if key not in fields and key not in device.unsupported:
                value = self._get(device, key, [(name, extra())])
                if value is not None:
                    fields[key] = value * factor if factor != 1 else value
        if device.links and "nvlink_down" not in fields:
            fields["nvlink_down"] = self._links_down(device)
        retired = [fields.pop(k) for k in ("retired_sbe", "retired_dbe") if k in fields]
        if retired:
            reading["retired_pages"] = sum(retired)
        self._note_recovery_action(device, fields.pop("recovery_action", None))
        for key, value in fields.items():
            if value is None:
                continue
            if key in _BOOLEAN_FIELDS:
                reading[key] = bool(value)
            elif isinstance(value, float):
                reading[key] = round(value, 1)
            else:
                reading[key] = value

        utilization = self._get(device, "util", [("nvmlDeviceGetUtilizationRates", ())])
        if utilization is not None:
            reading["util"] = utilization.gpu
            reading["mem_util"] = utilization.memory
        memory = self._memory(device)
        if memory is not None:
            reading["mem_used_mib"] = memory.used // 2**20
            reading["mem_total_mib"] = memory.total // 2**20
        gpu_sensor = (pynvml.NVML_TEMPERATURE_GPU,)
        temperature = self._get(
            device,
            "temp_c",
            [("nvmlDeviceGetTemperatureV", gpu_sensor), ("nvmlDeviceGetTemperature", gpu_sensor)],
        )
        optional = {
            "temp_c": temperature,
            "fan_pct": self._get(device, "fan_pct", [("nvmlDeviceGetFanSpeed", ())]),
            "sm_clock_mhz": self._get(
                device, "sm_clock_mhz", [("nvmlDeviceGetClockInfo", (pynvml.NVML_CLOCK_SM,))]
            ),
            "sm_clock_max_mhz": self._get(
                device, "sm_clock_max_mhz", [("nvmlDeviceGetMaxClockInfo", (pynvml.NVML_CLOCK_SM,))]
            ),
            "mem_clock_mhz": self._get(
                device, "mem_clock_mhz", [("nvmlDeviceGetClockInfo", (pynvml.NVML_CLOCK_MEM,))]
            ),
            "throttle": self._get(
                device,
                "throttle",
                [
                    ("nvmlDeviceGetCurrentClocksEventReasons", ()),
                    ("nvmlDeviceGetCurrentClocksThrottleReasons", ()),
                ],
            ),
            "pcie_gen": self._get(
                device, "pcie_gen", [("nvmlDeviceGetCurrPcieLinkGeneration", ())]
            ),
            "pcie_width": self._get(device, "pcie_width", [("nvmlDeviceGetCurrPcieLinkWidth", ())]),
        }
        reading.update((key, value) for key, value in optional.items() if value is not None)
        if (procs := self._processes(device)) is not None:
            reading["procs"] = procs
        return reading

    def _note_recovery_action(self, device: _Device, action: Any) -> None:
        """Raise a recovery_action event when NVML starts asking for a new action."""
        if action is None:
            return
        action = int(action)
        if action and action != device.recovery_action:
            name = RECOVERY_ACTIONS.get(action, str(action))
            self._queue_event("recovery_action", device.index, action, f"NVML asks for {name}")
        device.recovery_action = action

    def sample(self) -> list[dict[str, Any]]:
        """One reading per GPU; a failing GPU never stops the others being read."""
        readings = []
        live_pids: set[int] = set()
        for device in self._devices:
            if device.handle is None and time.monotonic() >= device.retry_at:
                self._open_handle(device)
            if device.handle is None:
                readings.append(
                    {"i": device.index, "lost": True} if device.lost else {"i": device.index}
                )
                continue
            try:
                reading = self._sample_device(device)
            except pynvml.NVMLError_GpuIsLost:
                reading = {"i": device.index, "lost": True}
                if not device.lost:
                    self._queue_event("gpu_lost", device.index, None, "NVML: GPU is lost")
                device.lost = True
            except Exception:
                log.exception("GPU %d: sampling failed", device.index)
                reading = {"i": device.index}
            else:
                device.lost = False
                live_pids.update(p["pid"] for p in reading.get("procs", ()))
            readings.append(reading)
        for pid in [pid for pid in self._users if pid not in live_pids]:
            del self._users[pid]
        return readings

    # Events ------------------------------------------------------------------------------

    def _queue_event(self, kind: str, gpu: int | None, code: int | None, detail: str) -> None:
        event = {
            "kind": kind,
            "gpu": gpu,
            "code": code,
            "ts": round(time.time(), 3),
            "detail": detail,
        }
        with self._events_lock:
            self._events.append(event)

    def drain_events(self) -> list[dict[str, Any]]:
        """Events from the event thread and from sampling since the last call."""
        with self._events_lock:
            events = list(self._events)
            self._events.clear()
        return events

    def close(self) -> None:
        """Stop the event thread and shut NVML down."""
        if self._watcher is not None:
            self._watcher.stop()
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError as exc:
            log.debug("NVML shutdown failed: %s", exc)
