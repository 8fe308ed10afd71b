"""The health rule tables: every XID and counter condition of gpu-health.md, its class,
its health effect and its action. No database."""

import ast
from pathlib import Path

import pytest

from apps.monitoring import rules
from apps.monitoring.health import FATAL_CLASSES, NODE_WIDE_CLASSES

GPU_OUT = "take the GPU out of the pool, requeue its job, reset the GPU"
NODE_OUT = "take the node out, requeue all its jobs, reboot"
NO_DRAIN = "none; the job's own failure"

# (xid, class, severity, drains, node-wide) for every XID listed in gpu-health.md.
XID_TABLE = [
    *[(x, "application", "info", False, False) for x in (13, 31, 43, 45, 68, 94)],
    *[(x, "watch", "warning", False, False) for x in (63, 92)],
    *[
        (x, "gpu_reset", "critical", True, False)
        for x in (46, 48, 62, 64, 95, 110, 119, 120, 136, 140, 143, 155, 156, 158)
    ],
    *[(x, "node_reboot", "critical", True, True) for x in (79, 160)],
    (109, "disputed", "warning", False, False),
    (999, "unknown", "warning", False, False),
]


def xid(code: int, gpu: int | None = 2, detail: str = "", **kwargs: object) -> rules.Finding:
    event = {"kind": "xid", "gpu": gpu, "code": code, "ts": 0.0, "detail": detail}
    finding = rules.event_finding(event, **kwargs)
    assert finding is not None
    return finding


@pytest.mark.parametrize(("code", "klass", "severity", "drains", "node_wide"), XID_TABLE)
def test_every_xid_of_the_reference_has_its_class_health_effect_and_action(
    code: int, klass: str, severity: str, drains: bool, node_wide: bool
) -> None:
    finding = xid(code)

    assert finding.rule_class == klass
    assert finding.severity == severity
    assert finding.drains is drains
    assert (finding.rule_class in FATAL_CLASSES) is drains  # health.py agrees
    assert finding.gpu_index == 2
    assert rules.CLASSES[finding.rule_class].node_wide is node_wide
    assert (finding.rule_class in NODE_WIDE_CLASSES) is node_wide  # health.py agrees
    assert finding.source == "xid"
    assert finding.code == str(code)
    assert f"XID {code}" in finding.reason
    assert finding.ref
    assert not finding.condition


def test_xid_13_is_the_jobs_failure_and_never_drains() -> None:
    finding = xid(13)

    assert finding.action == NO_DRAIN
    assert not finding.drains
    # Not even when it repeats: only warn-only classes escalate.
    assert not xid(13, repeat_drain=3, seen_in_day=50).drains


def test_xid_48_takes_the_gpu_out() -> None:
    finding = xid(48)

    assert finding.action == GPU_OUT
    assert finding.gpu_index == 2


def test_xid_79_takes_the_node_out_and_names_the_gpu() -> None:
    finding = xid(79, gpu=5)

    assert finding.action == NODE_OUT
    assert finding.gpu_index == 5
    assert "GPU 5" in finding.reason


@pytest.mark.parametrize(
    ("policy", "klass", "drains"), [("warn", "disputed", False), ("reset", "gpu_reset", True)]
)
def test_xid_109_follows_the_policy(policy: str, klass: str, drains: bool) -> None:
    finding = xid(109, xid_109_policy=policy)

    assert (finding.rule_class, finding.drains) == (klass, drains)


@pytest.mark.parametrize("code", [109, 999])
def test_a_warn_only_xid_seen_often_enough_in_a_day_takes_the_gpu_out(code: int) -> None:
    assert not xid(code, repeat_drain=3, seen_in_day=2).drains
    escalated = xid(code, repeat_drain=3, seen_in_day=3)

    assert escalated.rule_class == "gpu_reset"
    assert escalated.action == GPU_OUT
    assert "3 times in 24 h" in escalated.reason


def test_repetition_never_drains_when_switched_off() -> None:
    assert not xid(999, repeat_drain=0, seen_in_day=100).drains


def test_a_reset_class_xid_that_returns_after_a_reset_flags_the_gpu_for_replacement() -> None:
    finding = xid(48, recurred_after_reset=True)

    assert finding.rule_class == "replace"
    assert "recurred after a reset" in finding.reason


@pytest.mark.parametrize(
    ("detail", "klass"),
    [
        ("(0x1) GPU Reset Required", "gpu_reset"),
        ("Drain and Reset Recommended", "gpu_reset"),
        ("Node Reboot Required", "node_reboot"),
        ("something else", "unknown"),
    ],
)
def test_xid_154_reads_its_detail(detail: str, klass: str) -> None:
    assert xid(154, detail=detail).rule_class == klass


@pytest.mark.parametrize(
    ("code", "name", "klass"),
    [
        (1, "GPU_RESET", "gpu_reset"),
        (3, "DRAIN_P2P", "gpu_reset"),
        (4, "DRAIN_AND_RESET", "gpu_reset"),
        (2, "NODE_REBOOT", "node_reboot"),
        (6, "BUS_RESET", "node_reboot"),
        (7, "SYSTEM_REBOOT", "node_reboot"),
        (5, "5", "unknown"),
    ],
)
def test_recovery_actions_follow_nvml(code: int, name: str, klass: str) -> None:
    event = {"kind": "recovery_action", "gpu": 1, "code": code, "ts": 0.0, "detail": ""}

    finding = rules.event_finding(event)

    assert finding is not None
    assert (finding.source, finding.code, finding.rule_class) == ("recovery", name, klass)


def test_recovery_action_none_calls_for_nothing() -> None:
    event = {"kind": "recovery_action", "gpu": 1, "code": 0, "ts": 0.0, "detail": ""}

    assert rules.event_finding(event) is None


@pytest.mark.parametrize(
    ("kind", "klass", "gpu_index"),
    [
        ("ecc_sbe", "watch", 1),
        ("ecc_dbe", "gpu_reset", 1),
        ("remap_failure", "replace", 1),
        ("gpu_lost", "node_reboot", 1),
    ],
)
def test_other_agent_events(kind: str, klass: str, gpu_index: int | None) -> None:
    finding = rules.event_finding({"kind": kind, "gpu": 1, "code": None, "ts": 0, "detail": ""})

    assert finding is not None
    assert (finding.rule_class, finding.gpu_index) == (klass, gpu_index)


# (reading, pcie rate, expected (source, code, class, gpu index)) per counter condition.
CONDITIONS = [
    ({"temp_c": 91, "temp_slowdown_c": 90}, None, ("thermal", "slowdown", "watch", 3)),
    ({"throttle": 0x20}, None, ("thermal", "slowdown", "watch", 3)),
    ({"throttle": 0x40}, None, ("thermal", "slowdown", "watch", 3)),
    ({"throttle": 0x4}, None, ("power", "throttle", "watch", 3)),
    ({"throttle": 0x80}, None, ("power", "throttle", "watch", 3)),
    ({"ecc_dbe": 1}, None, ("ecc", "dbe_volatile", "gpu_reset", 3)),
    ({"remap_pending": True}, None, ("remap", "pending", "gpu_reset", 3)),
    ({"remap_failure": True}, None, ("remap", "failure", "replace", 3)),
    ({"retired_pages": 63}, None, ("ecc", "retired_pages", "replace", 3)),
    ({"pcie_replay": 100}, 1.0, ("pcie", "replay_rate", "watch", 3)),
    ({"nvlink_down": 1}, None, ("nvlink", "down", "node_reboot", 3)),
    ({"lost": True}, None, ("bus", "gpu_lost", "node_reboot", 3)),
]


@pytest.mark.parametrize(("reading", "rate", "expected"), CONDITIONS)
def test_each_counter_condition(
    reading: dict, rate: float | None, expected: tuple[str, str, str, int | None]
) -> None:
    (finding,) = rules.reading_findings(3, reading, pcie_replay_rate=rate)

    assert (finding.source, finding.code, finding.rule_class, finding.gpu_index) == expected
    assert finding.condition
    assert finding.drains is (expected[2] in FATAL_CLASSES)
    assert rules.is_condition(finding.source, finding.code)


@pytest.mark.parametrize(
    ("reading", "rate"),
    [
        ({}, None),
        ({"util": 100, "temp_c": 80, "temp_slowdown_c": 90, "throttle": 0x1}, None),
        ({"temp_c": 95}, None),  # no threshold known: no judgement
        ({"ecc_dbe": 0, "ecc_sbe": 12, "retired_pages": 62, "nvlink_down": 0}, None),
        ({"remap_pending": False, "remap_failure": None}, None),
        ({"pcie_replay": 5}, 8 / 60),  # DCGM's limit is 8 a minute; at it is normal
        ({"ecc_dbe": None, "temp_c": None}, None),  # missing is not zero, nor a fault
    ],
)
def test_normal_readings_show_nothing(reading: dict, rate: float | None) -> None:
    assert rules.reading_findings(0, reading, pcie_replay_rate=rate) == []


def test_a_lost_gpu_shows_only_that() -> None:
    findings = rules.reading_findings(0, {"lost": True, "ecc_dbe": 3})

    assert [f.code for f in findings] == ["gpu_lost"]


def test_fewer_gpus_than_expected_takes_the_node_out() -> None:
    (finding,) = rules.node_findings(expected_gpus=8, visible_gpus=7)

    assert (finding.rule_class, finding.gpu_index, finding.action) == (
        "node_reboot",
        None,
        NODE_OUT,
    )
    assert "7 of 8" in finding.reason
    assert rules.node_findings(expected_gpus=8, visible_gpus=8) == []


def test_watch_conditions_resolve_themselves_and_draining_ones_do_not() -> None:
    assert rules.condition_resolves("watch")
    assert not any(rules.condition_resolves(c) for c in ("gpu_reset", "node_reboot", "replace"))


def test_rules_module_imports_nothing_of_django() -> None:
    tree = ast.parse(Path(rules.__file__).read_text())
    imported = [
        name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in (
            [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else [a.name for a in node.names]
        )
    ]

    assert imported
    assert not [m for m in imported if m.split(".")[0] in {"django", "apps", "channels"}]
