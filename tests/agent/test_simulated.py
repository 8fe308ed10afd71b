"""The simulated backend: identity, load following, workloads and faults."""

import subprocess
import sys
import time

import pytest

from podium.agent import protocol
from podium.agent.backends.simulated import (
    THROTTLE_HW_THERMAL,
    SimulatedBackend,
    memory_total_mib,
)


class FakeClock:
    """A clock the test moves forward by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float = 1.0) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _backend(clock: FakeClock, count: int = 2, **kwargs) -> SimulatedBackend:
    return SimulatedBackend(node_name="sim-1", count=count, clock=clock, **kwargs)


def _run(backend: SimulatedBackend, clock: FakeClock, seconds: int) -> list[dict]:
    readings = []
    for _ in range(seconds):
        clock.tick()
        readings = backend.sample()
    return readings


def test_describe_marks_gpus_simulated_with_stable_uuids(clock: FakeClock) -> None:
    description = _backend(clock, count=8).describe()
    again = SimulatedBackend(node_name="sim-1", count=8).describe()
    other = SimulatedBackend(node_name="sim-2", count=8).describe()

    assert description.backend == "simulated"
    assert description.gpu_status == ""
    assert len(description.gpus) == 8
    gpu = description.gpus[0]
    assert gpu["name"] == "NVIDIA H100 80GB (simulated)"
    assert gpu["simulated"] is True
    assert gpu["memory_total_mib"] == 81559
    assert gpu["uuid"].startswith("GPU-")
    assert len(gpu["nvlink_peers"]) == 7
    assert [g["uuid"] for g in again.gpus] == [g["uuid"] for g in description.gpus]
    assert not {g["uuid"] for g in other.gpus} & {g["uuid"] for g in description.gpus}


def test_memory_total_follows_the_model_name() -> None:
    assert memory_total_mib("H100 80GB") == 81559
    assert memory_total_mib("A100 40GB") == 40779
    assert memory_total_mib("mystery") == 81559


def test_idle_gpus_are_quiet_but_change(clock: FakeClock) -> None:
    backend = _backend(clock)
    first = _run(backend, clock, 1)
    later = _run(backend, clock, 5)

    assert all(reading["util"] <= 1 for reading in later)
    assert all(60 <= reading["power_w"] <= 80 for reading in later)
    assert [r["power_w"] for r in first] != [r["power_w"] for r in later]
    assert set(later[0]) >= {"util", "mem_used_mib", "temp_c", "power_w", "throttle", "ecc_dbe"}


def test_demo_workload_keeps_gpus_busy_and_differs_by_node(clock: FakeClock) -> None:
    nodes = [
        SimulatedBackend(node_name=f"demo-{n}", count=8, workload="demo", clock=clock)
        for n in range(1, 6)
    ]
    totals = []
    for _ in range(60):
        clock.tick()
        totals.append([sum(r["util"] for r in node.sample()) for node in nodes])

    per_node = [sum(column) for column in zip(*totals, strict=True)]
    assert max(per_node) > 0
    assert len(set(per_node)) > 1


def test_util_follows_an_attached_cpu_burning_process() -> None:
    burner = subprocess.Popen(
        [sys.executable, "-c", "import time\nend = time.time() + 5\nwhile time.time() < end: pass"]
    )
    try:
        backend = SimulatedBackend(node_name="sim-1", count=2)
        backend.attach(1, burner.pid)
        backend.sample()  # the first CPU reading only starts the count
        time.sleep(0.5)
        busy, idle = backend.sample()[1], backend.sample()[0]

        assert busy["util"] >= 50
        assert idle["util"] <= 1
        assert busy["procs"][0]["pid"] == burner.pid
        assert busy["procs"][0]["name"].startswith("python")

        backend.detach(1, burner.pid)
        assert "procs" not in backend.sample()[1]
    finally:
        burner.kill()
        burner.wait()


def test_xid_fault_emits_an_event(clock: FakeClock) -> None:
    backend = _backend(clock)

    ok, detail = backend.inject_fault(gpu=1, fault=protocol.FAULT_XID, code=48)

    assert ok, detail
    (event,) = backend.drain_events()
    assert (event["kind"], event["gpu"], event["code"]) == ("xid", 1, 48)
    assert backend.drain_events() == []
    assert "lost" not in _run(backend, clock, 1)[1]


@pytest.mark.parametrize(
    ("fault", "code"), [(protocol.FAULT_FALL_OFF_BUS, None), (protocol.FAULT_XID, 79)]
)
def test_falling_off_the_bus_loses_the_gpu_until_cleared(
    clock: FakeClock, fault: str, code: int | None
) -> None:
    backend = _backend(clock)

    assert backend.inject_fault(gpu=0, fault=fault, code=code)[0]

    events = backend.drain_events()
    assert sorted((e["kind"], e["code"]) for e in events) == [("gpu_lost", None), ("xid", 79)]
    readings = _run(backend, clock, 1)
    assert readings[0] == {"i": 0, "lost": True}
    assert "util" in readings[1]
    assert backend.inject_fault(gpu=0, fault=protocol.FAULT_ECC_DBE, code=None)[0] is False
    assert backend.inject_fault(gpu=0, fault=protocol.FAULT_CLEAR, code=None)[0]
    assert "util" in _run(backend, clock, 1)[0]


def test_ecc_dbe_fault_counts_and_emits(clock: FakeClock) -> None:
    backend = _backend(clock)

    backend.inject_fault(gpu=0, fault=protocol.FAULT_ECC_DBE, code=None)
    backend.inject_fault(gpu=0, fault=protocol.FAULT_ECC_DBE, code=None)

    assert [e["kind"] for e in backend.drain_events()] == ["ecc_dbe", "ecc_dbe"]
    assert _run(backend, clock, 1)[0]["ecc_dbe"] == 2
    backend.inject_fault(gpu=0, fault=protocol.FAULT_CLEAR, code=None)
    assert _run(backend, clock, 1)[0]["ecc_dbe"] == 0


def test_overheat_climbs_past_slowdown_and_throttles(clock: FakeClock) -> None:
    backend = _backend(clock)
    before = _run(backend, clock, 1)[0]
    assert before["throttle"] & THROTTLE_HW_THERMAL == 0

    backend.inject_fault(gpu=0, fault=protocol.FAULT_OVERHEAT, code=None)
    hot = _run(backend, clock, 15)[0]

    assert hot["temp_c"] > hot["temp_slowdown_c"]
    assert hot["throttle"] & THROTTLE_HW_THERMAL
    backend.inject_fault(gpu=0, fault=protocol.FAULT_CLEAR, code=None)
    cooled = _run(backend, clock, 120)[0]
    assert cooled["temp_c"] < cooled["temp_slowdown_c"]
    assert cooled["throttle"] & THROTTLE_HW_THERMAL == 0


@pytest.mark.parametrize(
    ("gpu", "fault", "code", "message"),
    [
        (0, "melt", None, "unknown fault"),
        (2, protocol.FAULT_XID, 48, "no GPU 2"),
        (-1, protocol.FAULT_ECC_DBE, None, "no GPU -1"),
        ("0", protocol.FAULT_ECC_DBE, None, "no GPU '0'"),
        (0, protocol.FAULT_XID, None, "needs a code"),
        (0, protocol.FAULT_XID, 0, "needs a code"),
    ],
)
def test_invalid_faults_are_refused(clock, gpu, fault, code, message) -> None:
    backend = _backend(clock)

    ok, detail = backend.inject_fault(gpu=gpu, fault=fault, code=code)

    assert ok is False
    assert message in detail
    assert backend.drain_events() == []


def test_unknown_workload_or_no_gpus_is_an_error() -> None:
    with pytest.raises(ValueError, match="workload"):
        SimulatedBackend(node_name="x", count=1, workload="party")
    with pytest.raises(ValueError, match="at least one GPU"):
        SimulatedBackend(node_name="x", count=0)
