"""Simulated GPUs for demos and tests: plausible telemetry and injectable faults.

Each GPU follows the CPU load of the processes attached to it (``attach`` / ``detach``,
used by the job runner): utilization is the summed CPU % of the process trees, capped at
100; memory grows with utilization; power sits between the model's idle draw and its
limit; temperature moves toward a load-dependent target with thermal inertia. With no
process attached, the ``idle`` workload stays near zero and ``demo`` plays a synthetic
training pattern (loading, ramp, steady steps with checkpoint dips, evaluation) that is
the same every time for a given node name and differs between nodes and GPU groups.

Faults (``protocol.FAULTS``): ``xid`` emits an XID event (79 also drops the GPU off the
bus), ``ecc_dbe`` adds a volatile double-bit error, ``overheat`` drives the temperature
past the slowdown threshold and sets the HW thermal throttle bit, ``fall_off_bus`` makes
the GPU answer only ``lost``, ``clear`` returns it to normal as a reset would.
"""

import contextlib
import hashlib
import math
import random
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

from podium.agent import protocol
from podium.agent.backends import Description, GpuBackend

DEFAULT_MODEL = "H100 80GB"
WORKLOADS = ("idle", "demo")
XID_FALLEN_OFF_BUS = 79
THROTTLE_SW_POWER_CAP = 0x4
THROTTLE_HW_THERMAL = 0x40

_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "podium/simulated-gpu")
# The bus ids of an 8-GPU HGX board, so simulated nodes look like the real thing.
_BUS_IDS = (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)
_AMBIENT_C = 30.0
_FULL_LOAD_RISE_C = 45.0
_OVERHEAT_ABOVE_SLOWDOWN_C = 8.0
_THERMAL_TAU_S = 20.0
_OVERHEAT_TAU_S = 4.0
_MEMORY_TAU_S = 4.0
_IDLE_SM_CLOCK_MHZ = 345


@dataclass(frozen=True)
class GpuModel:
    """Figures of a GPU model that shape its simulated readings."""

    power_limit_w: float
    idle_w: float
    sm_clock_max_mhz: int
    mem_clock_mhz: int
    slowdown_c: float


# Matched by substring of the model name, first match wins; unknown names look like H100.
_MODELS = (
    ("B200", GpuModel(1000, 140, 1965, 3996, 87)),
    ("H200", GpuModel(700, 75, 1980, 3201, 87)),
    ("H100", GpuModel(700, 70, 1980, 2619, 87)),
    ("A100", GpuModel(400, 55, 1410, 1593, 88)),
    ("L40S", GpuModel(350, 35, 2520, 9001, 88)),
)


def model_figures(name: str) -> GpuModel:
    """The figures for a model name such as "H100 80GB" (H100 figures when unknown)."""
    upper = name.upper()
    return next((model for key, model in _MODELS if key in upper), _MODELS[2][1])


def memory_total_mib(name: str) -> int:
    """The memory a GPU of this model reports: 80 GB reads as 81559 MiB, like an H100."""
    found = re.search(r"(\d+(?:\.\d+)?)\s*GB", name, re.IGNORECASE)
    gigabytes = float(found.group(1)) if found else 80.0
    return int(gigabytes * 81559 / 80)


class _Gpu:
    """The state of one simulated GPU between samples."""

    __slots__ = ("ecc_dbe", "energy_j", "index", "lost", "mem_used", "overheat", "pids", "temp")

    def __init__(self, index: int) -> None:
        self.index = index
        self.temp = _AMBIENT_C
        self.mem_used = 0.0
        self.energy_j = 0.0
        self.ecc_dbe = 0
        self.overheat = False
        self.lost = False
        self.pids: list[int] = []


class SimulatedBackend(GpuBackend):
    """``count`` simulated GPUs of ``model`` for the node ``node_name``."""

    def __init__(
        self,
        *,
        node_name: str,
        count: int,
        model: str = DEFAULT_MODEL,
        workload: str = "idle",
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(status="")
        if count < 1:
            raise ValueError("a simulated node needs at least one GPU")
        if workload not in WORKLOADS:
            raise ValueError(f"workload must be one of {', '.join(WORKLOADS)}")
        self.node_name = node_name
        self.model = model
        self.workload = workload
        self._figures = model_figures(model)
        self._total_mib = memory_total_mib(model)
        self._clock = clock
        self._seed = int.from_bytes(hashlib.sha256(node_name.encode()).digest()[:8], "big")
        self._rng = random.Random(self._seed)  # noqa: S311  (telemetry noise, not security)
        self._gpus = [_Gpu(index) for index in range(count)]
        self._uuids = [
            f"GPU-{uuid.uuid5(_UUID_NAMESPACE, f'{node_name}/{index}')}" for index in range(count)
        ]
        self._events: list[dict[str, Any]] = []
        self._processes: dict[int, psutil.Process] = {}
        self._last_at: float | None = None
        self._lock = threading.Lock()

    # Description -------------------------------------------------------------------------

    def describe(self) -> Description:
        """The simulated GPUs, fully connected over NVLink as on an NVSwitch board."""
        gpus = []
        for gpu in self._gpus:
            digest = hashlib.sha256(self._uuids[gpu.index].encode()).hexdigest()
            bus = _BUS_IDS[gpu.index] if gpu.index < len(_BUS_IDS) else 0xE0 + gpu.index % 0x1F
            gpus.append(
                {
                    "index": gpu.index,
                    "uuid": self._uuids[gpu.index],
                    "name": f"NVIDIA {self.model} (simulated)",
                    "serial": str(int(digest[:12], 16))[:13],
                    "memory_total_mib": self._total_mib,
                    "pci_bus_id": f"00000000:{bus:02X}:00.0",
                    "nvlink_peers": [u for i, u in enumerate(self._uuids) if i != gpu.index],
                    "simulated": True,
                }
            )
        return Description(backend="simulated", gpu_status="", gpus=gpus)

    # Processes ---------------------------------------------------------------------------

    def attach(self, index: int, pid: int) -> None:
        """Let GPU ``index`` follow the CPU load of process ``pid`` and its children."""
        with self._lock:
            pids = self._gpus[index].pids
            if pid not in pids:
                pids.append(pid)

    def detach(self, index: int, pid: int) -> None:
        """Stop following ``pid`` on GPU ``index`` (unknown pids are ignored)."""
        with self._lock:
            pids = self._gpus[index].pids
            if pid in pids:
                pids.remove(pid)

    def _process(self, pid: int, seen: dict[int, psutil.Process]) -> psutil.Process:
        proc = self._processes.get(pid) or psutil.Process(pid)
        seen[pid] = proc
        return proc

    def _attached_load(self, gpu: _Gpu, seen: dict[int, psutil.Process]) -> float:
        """Summed CPU % of the attached process trees; ended processes are detached."""
        total = 0.0
        for pid in list(gpu.pids):
            try:
                root = self._process(pid, seen)
                total += root.cpu_percent(interval=None)
                for child in root.children(recursive=True):
                    total += self._process(child.pid, seen).cpu_percent(interval=None)
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                gpu.pids.remove(pid)
            except psutil.AccessDenied:
                continue
        return total

    def _procs(
        self, gpu: _Gpu, mem_used: float, seen: dict[int, psutil.Process]
    ) -> list[dict[str, Any]]:
        share = round(mem_used / len(gpu.pids)) if gpu.pids else 0
        procs = []
        for pid in gpu.pids:
            proc = seen.get(pid)
            name = user = ""
            if proc is not None:
                with contextlib.suppress(psutil.Error, KeyError):
                    name, user = proc.name(), proc.username()
            procs.append({"pid": pid, "name": name, "user": user, "mem_mib": share})
        return procs

    # Sampling ----------------------------------------------------------------------------

    def _demo_util(self, index: int, now: float) -> float:
        """A training-like utilization curve, fixed by the node name and the GPU's group."""
        seed = self._seed
        if seed % 5 == 0:  # one node in five sits idle
            return self._rng.uniform(0, 2)
        group = 1 if seed % 3 == 0 and index >= len(self._gpus) // 2 else 0
        job = seed + group * 7919
        period = 180 + job % 180
        t = now + job % period
        phase = (t % period) / period
        if phase < 0.06:  # starting, loading data
            base = 3.0
        elif phase < 0.12:  # ramping up
            base = 3.0 + (phase - 0.06) / 0.06 * 90.0
        elif phase < 0.8:  # steady steps, a short dip at each checkpoint
            base = 15.0 if t % 45 < 3 else 93.0 + 5.0 * math.sin(t / (2.0 + group))
        else:  # evaluation
            base = 60.0 + 10.0 * math.sin(t / 1.3)
        return base + 1.5 * math.sin(t / 3.0 + index) + self._rng.uniform(-2, 2)

    def sample(self) -> list[dict[str, Any]]:
        """One reading per GPU; a GPU off the bus reads only ``lost``."""
        with self._lock:
            now = self._clock()
            elapsed = 1.0 if self._last_at is None else min(max(now - self._last_at, 0.0), 10.0)
            self._last_at = now
            seen: dict[int, psutil.Process] = {}
            readings = [self._sample_gpu(gpu, now, elapsed, seen) for gpu in self._gpus]
            self._processes = seen
            return readings

    def _sample_gpu(
        self, gpu: _Gpu, now: float, elapsed: float, seen: dict[int, psutil.Process]
    ) -> dict[str, Any]:
        if gpu.lost:
            return {"i": gpu.index, "lost": True}
        figures, rng = self._figures, self._rng
        if gpu.pids:
            util = min(100.0, self._attached_load(gpu, seen))
        elif self.workload == "demo":
            util = self._demo_util(gpu.index, now)
        else:
            util = 1.0 if rng.random() < 0.05 else 0.0
        util = min(100.0, max(0.0, util))
        load = util / 100.0

        busy = bool(gpu.pids) or util >= 1.0
        mem_target = self._total_mib * (0.04 + 0.88 * load) if busy else 0.0
        gpu.mem_used += (mem_target - gpu.mem_used) * min(1.0, elapsed / _MEMORY_TAU_S)

        power = figures.idle_w + (figures.power_limit_w - figures.idle_w) * load**1.1
        power = min(figures.power_limit_w, max(0.0, power + rng.uniform(-3.0, 3.0)))
        gpu.energy_j += power * elapsed

        if gpu.overheat:
            target, tau = figures.slowdown_c + _OVERHEAT_ABOVE_SLOWDOWN_C, _OVERHEAT_TAU_S
        else:
            target, tau = _AMBIENT_C + _FULL_LOAD_RISE_C * load, _THERMAL_TAU_S
        gpu.temp += (target - gpu.temp) * (1.0 - math.exp(-elapsed / tau))
        gpu.temp += rng.uniform(-0.3, 0.3)

        throttle = 0
        if power >= 0.98 * figures.power_limit_w:
            throttle |= THROTTLE_SW_POWER_CAP
        if gpu.overheat and gpu.temp >= figures.slowdown_c:
            throttle |= THROTTLE_HW_THERMAL
        sm_clock: float
        if util < 1.0:
            sm_clock = _IDLE_SM_CLOCK_MHZ
        else:
            sm_clock = figures.sm_clock_max_mhz * (0.88 + 0.12 * rng.random())
        if throttle & THROTTLE_HW_THERMAL:
            sm_clock *= 0.6

        reading: dict[str, Any] = {
            "i": gpu.index,
            "util": round(util),
            "mem_util": round(util * 0.6),
            "mem_used_mib": round(gpu.mem_used),
            "mem_total_mib": self._total_mib,
            "temp_c": round(gpu.temp, 1),
            "mem_temp_c": round(gpu.temp + 4.0, 1),
            "temp_slowdown_c": figures.slowdown_c,
            "power_w": round(power, 1),
            "power_limit_w": figures.power_limit_w,
            "energy_j": round(gpu.energy_j),
            "sm_clock_mhz": round(sm_clock),
            "sm_clock_max_mhz": figures.sm_clock_max_mhz,
            "mem_clock_mhz": figures.mem_clock_mhz,
            "throttle": throttle,
            "pcie_gen": 5,
            "pcie_width": 16,
            "pcie_replay": 0,
            "ecc_sbe": 0,
            "ecc_dbe": gpu.ecc_dbe,
            "retired_pages": 0,
            "remap_pending": False,
            "remap_failure": False,
            "nvlink_down": 0,
        }
        if gpu.pids:
            reading["procs"] = self._procs(gpu, gpu.mem_used, seen)
        return reading

    def drain_events(self) -> list[dict[str, Any]]:
        """Events raised by injected faults since the last call."""
        with self._lock:
            events, self._events = self._events, []
            return events

    # Faults ------------------------------------------------------------------------------

    def _event(self, kind: str, gpu: int, code: int | None, detail: str) -> None:
        self._events.append(
            {"kind": kind, "gpu": gpu, "code": code, "ts": round(time.time(), 3), "detail": detail}
        )

    def inject_fault(self, *, gpu: int, fault: str, code: int | None) -> tuple[bool, str]:
        """Apply ``fault`` to GPU ``gpu``; returns whether it was applied and what happened."""
        if fault not in protocol.FAULTS:
            return False, f"unknown fault {fault!r}: expected one of {', '.join(protocol.FAULTS)}"
        if isinstance(gpu, bool) or not isinstance(gpu, int) or not 0 <= gpu < len(self._gpus):
            return False, f"no GPU {gpu!r} on this node (GPUs 0-{len(self._gpus) - 1})"
        if fault == protocol.FAULT_XID and (
            isinstance(code, bool) or not isinstance(code, int) or not 1 <= code <= 999
        ):
            return False, "an xid fault needs a code between 1 and 999"
        with self._lock:
            state = self._gpus[gpu]
            if state.lost and fault != protocol.FAULT_CLEAR:
                return False, f"GPU {gpu} has fallen off the bus; clear it first"
            if fault == protocol.FAULT_CLEAR:
                state.lost = state.overheat = False
                state.ecc_dbe = 0
                return True, f"GPU {gpu} is back to normal"
            if fault == protocol.FAULT_ECC_DBE:
                state.ecc_dbe += 1
                self._event("ecc_dbe", gpu, None, "volatile double-bit ECC error (simulated)")
                return True, f"GPU {gpu}: {state.ecc_dbe} volatile double-bit ECC error(s)"
            if fault == protocol.FAULT_OVERHEAT:
                state.overheat = True
                return True, f"GPU {gpu} is heating past {self._figures.slowdown_c:g} °C"
            if fault == protocol.FAULT_XID and code != XID_FALLEN_OFF_BUS:
                self._event("xid", gpu, code, f"XID {code} (simulated)")
                return True, f"GPU {gpu}: XID {code}"
            state.lost = True
            state.pids.clear()
            self._event("xid", gpu, XID_FALLEN_OFF_BUS, "XID 79: GPU has fallen off the bus")
            self._event("gpu_lost", gpu, None, "GPU has fallen off the bus (simulated)")
            return True, f"GPU {gpu} has fallen off the bus (XID 79)"
