"""The NVML backend against a fake pynvml: missing driver, NotSupported, lost GPUs, events."""

import os
import time
from types import SimpleNamespace

import psutil
import pynvml
import pytest

from podium.agent.backends import NO_DRIVER
from podium.agent.backends.nvml import NvmlBackend, nvml_open
from tests.agent.conftest import MIB, FakeNvml


def _open(fake: FakeNvml, *, events: bool = False) -> NvmlBackend:
    backend = nvml_open(watch_events=events, event_wait_ms=20)
    assert isinstance(backend, NvmlBackend)
    return backend


@pytest.mark.parametrize(
    "error", [pynvml.NVMLError_LibraryNotFound, pynvml.NVMLError_DriverNotLoaded]
)
def test_no_library_or_driver_reports_backend_none(fake_nvml: FakeNvml, error: type) -> None:
    fake_nvml.init_error = error

    backend = nvml_open()

    description = backend.describe()
    assert description.backend == "none"
    assert description.gpu_status == NO_DRIVER == "no NVIDIA driver found"
    assert description.gpus == []
    assert backend.sample() == []
    assert backend.inject_fault(gpu=0, fault="xid", code=48) == (False, "not a simulated GPU")


def test_describe_reports_versions_gpus_and_nvlink_peers(fake_nvml: FakeNvml) -> None:
    first, second = fake_nvml.add(2)
    first.nvlinks = {0: second.bus_id.replace("00000000:", "0000:"), 2: second.bus_id}
    second.nvlinks = {1: first.bus_id}

    description = _open(fake_nvml).describe()

    assert description.backend == "nvml"
    assert description.gpu_status == ""
    assert description.driver_version == "550.54.15"
    assert description.cuda_version == "12.4"
    assert [gpu["uuid"] for gpu in description.gpus] == ["GPU-fake-0", "GPU-fake-1"]
    gpu = description.gpus[0]
    assert gpu["name"] == "NVIDIA H100 80GB HBM3"
    assert gpu["memory_total_mib"] == 81559
    assert gpu["pci_bus_id"] == "00000000:18:00.0"
    assert gpu["simulated"] is False
    assert gpu["nvlink_peers"] == ["GPU-fake-1"]
    assert description.gpus[1]["nvlink_peers"] == ["GPU-fake-0"]


def test_sample_reads_field_values_and_getters(fake_nvml: FakeNvml) -> None:
    (device,) = fake_nvml.add(1)
    device.procs = [SimpleNamespace(pid=os.getpid(), usedGpuMemory=512 * MIB)]
    me = psutil.Process()

    (reading,) = _open(fake_nvml).sample()

    assert reading["i"] == 0
    assert reading["util"] == 73
    assert reading["mem_util"] == 35
    assert reading["mem_used_mib"] == 1000
    assert reading["mem_total_mib"] == 81559
    assert reading["temp_c"] == 41
    assert reading["temp_slowdown_c"] == 87
    assert reading["power_w"] == pytest.approx(123.5)
    assert reading["power_limit_w"] == pytest.approx(700)
    assert reading["energy_j"] == pytest.approx(5000)
    assert reading["ecc_sbe"] == 2
    assert reading["ecc_dbe"] == 0
    assert reading["pcie_replay"] == 7
    assert reading["retired_pages"] == 3
    assert reading["remap_pending"] is False
    assert reading["throttle"] == 0x4
    assert reading["sm_clock_max_mhz"] == 1980
    assert reading["procs"] == [
        {"pid": os.getpid(), "name": me.name(), "user": me.username(), "mem_mib": 512}
    ]
    assert "nvmlDeviceGetPowerUsage" not in fake_nvml.calls  # the field value sufficed


def test_not_supported_readings_are_missing_not_zero(fake_nvml: FakeNvml) -> None:
    (device,) = fake_nvml.add(1)
    device.not_supported |= {
        "nvmlDeviceGetFanSpeed",
        "nvmlDeviceGetUtilizationRates",
        "nvmlDeviceGetPowerUsage",
    }
    device.fields_not_supported |= {
        pynvml.NVML_FI_DEV_POWER_INSTANT,
        pynvml.NVML_FI_DEV_ECC_DBE_VOL_TOTAL,
    }
    device.readings["ecc_dbe"] = 0
    device.not_supported.add("nvmlDeviceGetTotalEccErrors")
    backend = _open(fake_nvml)

    (reading,) = backend.sample()
    fake_nvml.calls.clear()
    (again,) = backend.sample()

    for key in ("fan_pct", "util", "mem_util", "power_w", "ecc_dbe"):
        assert key not in reading
        assert key not in again
    assert reading["temp_c"] == 41
    assert reading["ecc_sbe"] == 2
    # What NVML said it cannot do is not asked again.
    assert "nvmlDeviceGetFanSpeed" not in fake_nvml.calls
    assert "nvmlDeviceGetPowerUsage" not in fake_nvml.calls


def test_lost_gpu_reads_lost_with_one_event_and_others_still_sampled(fake_nvml: FakeNvml) -> None:
    first, _ = fake_nvml.add(2)
    backend = _open(fake_nvml)
    first.lost = True

    readings = backend.sample()
    events = backend.drain_events()
    backend.sample()

    assert readings[0] == {"i": 0, "lost": True}
    assert readings[1]["util"] == 73
    assert [(e["kind"], e["gpu"]) for e in events] == [("gpu_lost", 0)]
    assert backend.drain_events() == []  # raised once, not every sample


def test_gpu_lost_in_a_field_value_marks_the_gpu_lost(fake_nvml: FakeNvml, monkeypatch) -> None:
    fake_nvml.add(1)
    backend = _open(fake_nvml)

    def lost_fields(handle, requests):
        values = [pynvml.c_nvmlFieldValue_t() for _ in requests]
        for value in values:
            value.nvmlReturn = pynvml.NVML_ERROR_GPU_IS_LOST
        return values

    monkeypatch.setattr(pynvml, "nvmlDeviceGetFieldValues", lost_fields)

    assert backend.sample() == [{"i": 0, "lost": True}]


def test_older_driver_falls_back_to_older_calls(fake_nvml: FakeNvml) -> None:
    fake_nvml.add(1)
    fake_nvml.old_driver()
    backend = _open(fake_nvml)

    (reading,) = backend.sample()

    assert reading["mem_used_mib"] == 1000  # memory info v1
    assert reading["throttle"] == 0x4  # nvmlDeviceGetCurrentClocksThrottleReasons
    assert reading["temp_c"] == 41  # nvmlDeviceGetTemperature
    assert reading["procs"][0]["pid"] == 1  # nvmlDeviceGetComputeRunningProcesses_v2
    for older in (
        "nvmlDeviceGetCurrentClocksThrottleReasons",
        "nvmlDeviceGetTemperature",
        "nvmlDeviceGetComputeRunningProcesses_v2",
    ):
        assert older in fake_nvml.calls


def test_driver_without_field_values_uses_the_getters(fake_nvml: FakeNvml, monkeypatch) -> None:
    fake_nvml.add(1)
    monkeypatch.delattr(pynvml, "nvmlDeviceGetFieldValues")
    monkeypatch.delattr(pynvml, "nvmlMemory_v2")

    (reading,) = _open(fake_nvml).sample()

    assert reading["power_w"] == pytest.approx(123.5)
    assert reading["power_limit_w"] == pytest.approx(700)
    assert reading["temp_slowdown_c"] == 87
    assert reading["ecc_sbe"] == 2
    assert reading["pcie_replay"] == 7
    assert reading["mem_total_mib"] == 81559


def test_xid_events_from_the_event_set_become_xid_events(fake_nvml: FakeNvml) -> None:
    fake_nvml.add(2)
    backend = _open(fake_nvml, events=True)
    try:
        assert fake_nvml.registered == {0: 0x1 | 0x2 | 0x8 | 0x4000, 1: 0x1 | 0x2 | 0x8 | 0x4000}
        fake_nvml.feed_xid(1, 48)
        fake_nvml.feed_xid(0, 79)
        deadline = time.monotonic() + 3
        events: list = []
        while len(events) < 2 and time.monotonic() < deadline:
            events += backend.drain_events()
            time.sleep(0.01)
    finally:
        backend.close()

    assert [(e["kind"], e["gpu"], e["code"]) for e in events] == [("xid", 1, 48), ("xid", 0, 79)]
    assert events[0]["detail"] == "XID 48"
    assert isinstance(events[0]["ts"], float)


def test_memory_v2_is_used_when_the_driver_has_it(fake_nvml: FakeNvml, monkeypatch) -> None:
    (device,) = fake_nvml.add(1)
    versions = []
    original = pynvml.nvmlDeviceGetMemoryInfo

    def spy(handle, version=None):
        versions.append(version)
        return original(handle, version=version)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", spy)
    backend = _open(fake_nvml)
    versions.clear()

    backend.sample()

    assert versions == [pynvml.nvmlMemory_v2]
    assert device.readings["mem_used"] == 1000 * MIB
