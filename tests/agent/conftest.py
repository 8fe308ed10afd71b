"""Fixtures for the agent tests: a fake NVML and a small fake console.

``fake_nvml`` replaces the ``pynvml`` functions with fakes backed by ``FakeDevice``
objects (the handles are the devices themselves). A device raises the real error classes:
``NVMLError_NotSupported`` for what it lacks, ``NVMLError_GpuIsLost`` once lost. Event
sets are a queue the test feeds. ``old_driver()`` removes or breaks the newer symbols to
exercise the fallbacks, as an older driver would.

``fake_console`` is a websocket server on 127.0.0.1 speaking the console's side of the
agent protocol, recording every frame.
"""

import asyncio
import json
import queue
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest
from websockets.asyncio.server import ServerConnection, serve

from podium.agent import protocol
from podium.agent.backends.host import HostSampler
from podium.agent.backends.simulated import SimulatedBackend
from podium.agent.client import Agent, AgentSettings
from podium.agent.facts import host_facts

MIB = 2**20


class FakeDevice:
    """One fake GPU; ``readings`` holds what its getters return."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.uuid = f"GPU-fake-{index}"
        self.bus_id = f"00000000:{0x18 + 0x10 * index:02X}:00.0"
        self.lost = False
        self.not_supported: set[str] = set()  # function names answering NotSupported
        self.fields_not_supported: set[int] = set()  # field ids answering NotSupported
        self.nvlinks: dict[int, str] = {}  # link -> remote PCI bus id
        self.supported_events = 0x1 | 0x2 | 0x8 | 0x4000
        self.readings: dict[str, Any] = {
            "temp": 41,
            "power_mw": 123_456,
            "limit_mw": 700_000,
            "slowdown": 87,
            "util": 73,
            "mem_util": 35,
            "mem_total": 81559 * MIB,
            "mem_used": 1000 * MIB,
            "sm": 1755,
            "sm_max": 1980,
            "mem_clock": 2619,
            "throttle": 0x4,
            "pcie_gen": 5,
            "pcie_width": 16,
            "fan": 30,
            "ecc_sbe": 2,
            "ecc_dbe": 0,
            "replay": 7,
            "energy_mj": 5_000_000,
        }
        self.procs = [SimpleNamespace(pid=1, usedGpuMemory=512 * MIB)]

    def check(self, function: str) -> None:
        if self.lost:
            raise pynvml.NVMLError_GpuIsLost()
        if function in self.not_supported:
            raise pynvml.NVMLError_NotSupported()


class FakeNvml:
    """The fake driver: install it, add devices, feed events, age it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.devices: list[FakeDevice] = []
        self.init_error: type[Exception] | None = None
        self.events: queue.Queue[Any] = queue.Queue()
        self.registered: dict[int, int] = {}
        self.calls: list[str] = []
        self.memory_v2_missing = False
        self.temperature_v_missing = False

    def add(self, count: int) -> list[FakeDevice]:
        self.devices += [FakeDevice(len(self.devices) + n) for n in range(count)]
        return self.devices

    def old_driver(self) -> None:
        """Act like a driver older than the binding: newer calls are missing or refused."""
        self.monkeypatch.delattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons")
        self.monkeypatch.setattr(pynvml, "nvmlDeviceGetComputeRunningProcesses", self._mismatch)
        self.memory_v2_missing = True
        self.temperature_v_missing = True

    def feed_xid(self, index: int, code: int) -> None:
        self.events.put(SimpleNamespace(device=self.devices[index], eventType=0x8, eventData=code))

    @staticmethod
    def _mismatch(handle: Any) -> Any:
        raise pynvml.NVMLLibraryMismatchError("Unversioned function called")

    def install(self) -> None:
        def device_call(name: str, getter: Callable[[FakeDevice], Any]) -> None:
            def fake(handle: FakeDevice, *args: Any, **kwargs: Any) -> Any:
                self.calls.append(name)
                handle.check(name)
                return getter(handle, *args, **kwargs)

            self.monkeypatch.setattr(pynvml, name, fake)

        def init() -> None:
            if self.init_error is not None:
                raise self.init_error()

        def memory(device: FakeDevice, version: int | None = None) -> Any:
            if version is not None and self.memory_v2_missing:
                raise pynvml.NVMLError_FunctionNotFound()
            values = device.readings
            return SimpleNamespace(
                total=values["mem_total"],
                used=values["mem_used"],
                free=values["mem_total"] - values["mem_used"],
                version=version,
            )

        def field_values(device: FakeDevice, requests: list[Any]) -> list[Any]:
            by_id = {
                pynvml.NVML_FI_DEV_POWER_INSTANT: device.readings["power_mw"],
                pynvml.NVML_FI_DEV_POWER_CURRENT_LIMIT: device.readings["limit_mw"],
                pynvml.NVML_FI_DEV_TEMPERATURE_SLOWDOWN_TLIMIT: device.readings["slowdown"],
                pynvml.NVML_FI_DEV_ECC_SBE_VOL_TOTAL: device.readings["ecc_sbe"],
                pynvml.NVML_FI_DEV_ECC_DBE_VOL_TOTAL: device.readings["ecc_dbe"],
                pynvml.NVML_FI_DEV_PCIE_REPLAY_COUNTER: device.readings["replay"],
                pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION: device.readings["energy_mj"],
                pynvml.NVML_FI_DEV_REMAPPED_PENDING: 0,
                pynvml.NVML_FI_DEV_REMAPPED_FAILURE: 0,
                pynvml.NVML_FI_DEV_RETIRED_SBE: 1,
                pynvml.NVML_FI_DEV_RETIRED_DBE: 2,
                pynvml.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION: 0,
            }
            values = []
            for request in requests:
                field_id, scope = request if isinstance(request, tuple) else (request, 0)
                value = pynvml.c_nvmlFieldValue_t()
                value.fieldId, value.scopeId = field_id, scope
                value.valueType = pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
                if field_id == pynvml.NVML_FI_DEV_NVLINK_GET_STATE and scope in device.nvlinks:
                    value.value.ullVal = 1
                    value.nvmlReturn = pynvml.NVML_SUCCESS
                elif field_id in by_id and field_id not in device.fields_not_supported:
                    value.value.ullVal = by_id[field_id]
                    value.nvmlReturn = pynvml.NVML_SUCCESS
                else:
                    value.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
                values.append(value)
            return values

        def temperature_v(device: FakeDevice, sensor: int) -> int:
            if self.temperature_v_missing:
                raise pynvml.NVMLError_FunctionNotFound()
            return device.readings["temp"]

        def nvlink_state(device: FakeDevice, link: int) -> int:
            if not device.nvlinks:
                raise pynvml.NVMLError_NotSupported()
            if link >= 4:
                raise pynvml.NVMLError_InvalidArgument()
            return int(link in device.nvlinks)

        def remote_pci(device: FakeDevice, link: int) -> Any:
            return SimpleNamespace(busId=device.nvlinks[link].encode())

        def register(device: FakeDevice, mask: int, event_set: Any) -> None:
            self.registered[device.index] = mask

        def wait(event_set: Any, timeout_ms: int) -> Any:
            try:
                return self.events.get(timeout=timeout_ms / 1000)
            except queue.Empty:
                raise pynvml.NVMLError_Timeout() from None

        patch = self.monkeypatch.setattr
        patch(pynvml, "nvmlInit", init)
        patch(pynvml, "nvmlShutdown", lambda: None)
        patch(pynvml, "nvmlDeviceGetCount", lambda: len(self.devices))
        patch(pynvml, "nvmlDeviceGetHandleByIndex", lambda index: self.devices[index])
        patch(pynvml, "nvmlSystemGetDriverVersion", lambda: "550.54.15")
        patch(pynvml, "nvmlSystemGetCudaDriverVersion_v2", lambda: 12040)
        patch(pynvml, "nvmlEventSetCreate", lambda: object())
        patch(pynvml, "nvmlEventSetWait", wait)
        patch(pynvml, "nvmlEventSetFree", lambda event_set: None)
        device_call("nvmlDeviceGetUUID", lambda d: d.uuid)
        device_call("nvmlDeviceGetName", lambda d: "NVIDIA H100 80GB HBM3")
        device_call("nvmlDeviceGetSerial", lambda d: f"16520230{d.index:05d}")
        device_call("nvmlDeviceGetPciInfo", lambda d: SimpleNamespace(busId=d.bus_id.encode()))
        device_call("nvmlDeviceGetMemoryInfo", memory)
        device_call("nvmlDeviceGetFieldValues", field_values)
        device_call("nvmlDeviceGetPowerUsage", lambda d: d.readings["power_mw"])
        device_call("nvmlDeviceGetEnforcedPowerLimit", lambda d: d.readings["limit_mw"])
        device_call("nvmlDeviceGetTemperatureThreshold", lambda d, t: d.readings["slowdown"])
        device_call("nvmlDeviceGetTotalEnergyConsumption", lambda d: d.readings["energy_mj"])
        device_call("nvmlDeviceGetPcieReplayCounter", lambda d: d.readings["replay"])
        device_call(
            "nvmlDeviceGetTotalEccErrors",
            lambda d, kind, counter: d.readings["ecc_dbe" if kind else "ecc_sbe"],
        )
        device_call(
            "nvmlDeviceGetUtilizationRates",
            lambda d: SimpleNamespace(gpu=d.readings["util"], memory=d.readings["mem_util"]),
        )
        device_call("nvmlDeviceGetTemperatureV", temperature_v)
        device_call("nvmlDeviceGetTemperature", lambda d, sensor: d.readings["temp"])
        device_call("nvmlDeviceGetFanSpeed", lambda d: d.readings["fan"])
        device_call(
            "nvmlDeviceGetClockInfo",
            lambda d, kind: d.readings["sm" if kind == pynvml.NVML_CLOCK_SM else "mem_clock"],
        )
        device_call("nvmlDeviceGetMaxClockInfo", lambda d, kind: d.readings["sm_max"])
        device_call("nvmlDeviceGetCurrentClocksEventReasons", lambda d: d.readings["throttle"])
        device_call("nvmlDeviceGetCurrentClocksThrottleReasons", lambda d: d.readings["throttle"])
        device_call("nvmlDeviceGetCurrPcieLinkGeneration", lambda d: d.readings["pcie_gen"])
        device_call("nvmlDeviceGetCurrPcieLinkWidth", lambda d: d.readings["pcie_width"])
        device_call("nvmlDeviceGetComputeRunningProcesses", lambda d: d.procs)
        device_call("nvmlDeviceGetComputeRunningProcesses_v2", lambda d: d.procs)
        device_call("nvmlDeviceGetNvLinkState", nvlink_state)
        device_call("nvmlDeviceGetNvLinkRemoteDeviceType", lambda d, link: 0)
        device_call("nvmlDeviceGetNvLinkRemotePciInfo", remote_pci)
        device_call("nvmlDeviceGetSupportedEventTypes", lambda d: d.supported_events)
        device_call("nvmlDeviceRegisterEvents", register)


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    """A fake NVML with no devices yet (add them with ``fake_nvml.add(n)``)."""
    fake = FakeNvml(monkeypatch)
    fake.install()
    return fake


# The fake console ---------------------------------------------------------------------------


@dataclass
class Connection:
    """One agent connection as the fake console saw it."""

    authorization: str
    frames: list[dict[str, Any]] = field(default_factory=list)
    ws: ServerConnection | None = None

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [frame for frame in self.frames if frame.get("type") == kind]


class FakeConsole:
    """The console's side of the protocol, configurable per test.

    ``join_token`` is accepted and answered with ``node_token``; ``node_token`` is
    accepted; anything else is closed with CLOSE_BAD_TOKEN. ``close_with`` closes every
    connection with that code right after the hello; ``refuse`` does so for the node names
    it maps to a code. ``acks`` says whether batches are acknowledged. ``fence_after`` is
    sent in the welcome.
    """

    def __init__(self) -> None:
        self.join_token = "pdj_join"
        self.node_token = "pdn_node"
        self.interval = 0.05
        self.heartbeat = 0.2
        self.acks = True
        self.close_with: int | None = None
        self.refuse: dict[str, int] = {}
        self.last_stored: int | None = None
        self.fence_after: float | None = None
        self.connections: list[Connection] = []
        self.url = ""

    async def _handler(self, ws: ServerConnection) -> None:
        connection = Connection(authorization=ws.request.headers.get("Authorization", ""), ws=ws)
        self.connections.append(connection)
        hello = json.loads(await ws.recv())
        connection.frames.append(hello)
        code = self.refuse.get(hello["name"], self.close_with)
        if code is not None:
            await ws.close(code, "refused")
            return
        token = connection.authorization.removeprefix("Bearer ")
        if token not in {self.join_token, self.node_token}:
            await ws.close(protocol.CLOSE_BAD_TOKEN, "bad token")
            return
        welcome = {
            "type": protocol.WELCOME,
            "node_id": 7,
            "name": hello["name"],
            "interval": self.interval,
            "heartbeat": self.heartbeat,
            "ack": self.last_stored,
            "fence_after": self.fence_after,
        }
        if token == self.join_token:
            welcome["node_token"] = self.node_token
        await ws.send(json.dumps(welcome))
        async for raw in ws:
            frame = json.loads(raw)
            connection.frames.append(frame)
            if frame["type"] == protocol.BATCH and self.acks:
                self.last_stored = frame["seq"]
                await ws.send(json.dumps({"type": protocol.ACK, "seq": frame["seq"]}))

    async def wait_for(self, condition: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Poll ``condition`` until it is truthy; fail the test after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not (result := condition()):
            if time.monotonic() > deadline:
                pytest.fail("the fake console waited in vain")
            await asyncio.sleep(0.01)
        return result

    async def send(self, message: dict[str, Any]) -> None:
        """Send ``message`` on the latest connection."""
        ws = self.connections[-1].ws
        assert ws is not None
        await ws.send(json.dumps(message))

    async def drop(self) -> None:
        """Close the latest connection as a restarting console would (1012)."""
        ws = self.connections[-1].ws
        assert ws is not None
        await ws.close(1012, "restarting")


@pytest.fixture
async def fake_console() -> AsyncIterator[FakeConsole]:
    """A fake console listening on 127.0.0.1 (its ``url`` is the http:// address)."""
    console = FakeConsole()
    async with serve(console._handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        console.url = f"http://127.0.0.1:{port}"
        yield console


def agent_make(
    console: FakeConsole, state_dir: Path, name: str = "node-a", **overrides: Any
) -> Agent:
    """An agent of simulated GPUs for ``console``, quick to reconnect."""
    settings = AgentSettings(
        server=console.url,
        name=name,
        state_dir=state_dir,
        join_token=overrides.pop("join_token", console.join_token),
        backoff_initial=0.05,
        backoff_max=overrides.pop("backoff_max", 0.2),
        welcome_timeout=2.0,
        **overrides,
    )
    return Agent(
        settings,
        backend=SimulatedBackend(node_name=name, count=2),
        host=HostSampler(),
        facts=host_facts(),
        machine_id="machine-1",
    )


async def agent_stop(agent: Agent, task: asyncio.Task) -> int:
    """Stop ``agent`` and return its exit status."""
    agent.stop()
    return await asyncio.wait_for(task, timeout=10)
