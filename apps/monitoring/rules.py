"""GPU health rules: an agent's events and readings in, findings out. Pure Python.

The tables below carry the classes of the health table in
``shared/reference/gpu-health.md``; every rule names where it comes from, in a comment
and in its data (``Rule.ref``), so an operator can read why a GPU was taken out.

- ``event_finding``: one EVENT of an agent batch (an XID, an ECC event, a remap failure,
  a lost GPU, a recovery action). A point finding: it happened.
- ``reading_findings``: the conditions one GPU reading shows (throttling, volatile
  double-bit errors, pending remaps…). Condition findings hold while the reading shows
  them; ``condition_key`` identifies one across batches.
- ``node_findings``: conditions of the node as a whole (fewer GPUs visible than expected).

A finding with ``gpu_index`` None is node-wide: it takes the whole node out.
"""

from dataclasses import dataclass
from typing import Any

# Rule classes (HealthEvent.rule_class).
APPLICATION = "application"
WATCH = "watch"
GPU_RESET = "gpu_reset"
NODE_REBOOT = "node_reboot"
REPLACE = "replace"
DISPUTED = "disputed"
UNKNOWN = "unknown"

# Severities (HealthEvent.Severity values).
INFO = "info"
WARNING = "warning"
CRITICAL = "critical"
SEVERITY_RANK = {INFO: 0, WARNING: 1, CRITICAL: 2}

# Classes that take a GPU (or, node-wide, the node) out of service.
DRAINING_CLASSES = frozenset({GPU_RESET, NODE_REBOOT, REPLACE})
# Classes whose events only warn, and that repetition escalates to a reset.
WARN_ONLY_CLASSES = frozenset({DISPUTED, UNKNOWN})
# How far a class takes a GPU out: an open event is escalated, never downgraded.
CLASS_RANK = {
    APPLICATION: 0,
    WATCH: 1,
    DISPUTED: 1,
    UNKNOWN: 1,
    GPU_RESET: 2,
    REPLACE: 3,
    NODE_REBOOT: 3,
}

REF_TABLE = "gpu-health.md, health rules table"
REF_XID_CATALOGUE = "NVIDIA XID catalogue (docs.nvidia.com/deploy/xid-errors)"
REF_NVML = "NVML API reference (nvidia-ml-py)"
REF_DCGM = "DCGM health watches (dcgm_gpu_hardware_limits.h)"


@dataclass(frozen=True)
class RuleClass:
    """What a class of finding means for the GPU and what the operator should do."""

    name: str
    severity: str
    action: str
    node_wide: bool = False


CLASSES: dict[str, RuleClass] = {
    # gpu-health.md: "no drain; the job's failure is the job's".
    APPLICATION: RuleClass(APPLICATION, INFO, "none; the job's own failure"),
    # gpu-health.md: "warn, trend; no drain".
    WATCH: RuleClass(WATCH, WARNING, "watch the trend; no drain"),
    # gpu-health.md: "take the GPU out of the pool, requeue its job, mark for reset".
    GPU_RESET: RuleClass(
        GPU_RESET, CRITICAL, "take the GPU out of the pool, requeue its job, reset the GPU"
    ),
    # gpu-health.md: "take the node out, requeue all its jobs".
    NODE_REBOOT: RuleClass(
        NODE_REBOOT,
        CRITICAL,
        "take the node out, requeue all its jobs, reboot",
        node_wide=True,
    ),
    # gpu-health.md: "keep out of the pool, flag for service".
    REPLACE: RuleClass(REPLACE, CRITICAL, "keep the GPU out of the pool and flag it for service"),
    # gpu-health.md: "make it configurable; default: warn, drain on repetition".
    DISPUTED: RuleClass(DISPUTED, WARNING, "watch; the GPU is taken out if it repeats"),
    # gpu-health.md: "warn; drain on repetition (configurable)".
    UNKNOWN: RuleClass(UNKNOWN, WARNING, "watch; the GPU is taken out if it repeats"),
}


@dataclass(frozen=True)
class Rule:
    """One row of a rule table: its class, what it means, and where it comes from."""

    rule_class: str
    meaning: str
    ref: str


# XID codes, from gpu-health.md's table; meanings from NVIDIA's XID catalogue.
XID_RULES: dict[int, Rule] = {
    # Application faults: the job's failure, never a drain (gpu-health.md; the k8s
    # device plugin skips these same codes when marking devices unhealthy).
    13: Rule(APPLICATION, "graphics engine exception", REF_TABLE),
    31: Rule(APPLICATION, "GPU memory page fault", REF_TABLE),
    43: Rule(APPLICATION, "GPU stopped processing (channel reset)", REF_TABLE),
    45: Rule(APPLICATION, "preemptive cleanup after previous errors", REF_TABLE),
    68: Rule(APPLICATION, "video processor exception", REF_TABLE),
    94: Rule(APPLICATION, "contained ECC error", REF_TABLE),
    # Watch: recorded, trended, no drain (gpu-health.md).
    63: Rule(WATCH, "row remapping or page retirement recorded", REF_TABLE),
    92: Rule(WATCH, "high single-bit ECC error rate", REF_TABLE),
    # GPU reset needed (gpu-health.md, after NVIDIA's XID catalogue).
    46: Rule(GPU_RESET, "GPU stopped processing", REF_XID_CATALOGUE),
    48: Rule(GPU_RESET, "double-bit ECC error", REF_XID_CATALOGUE),
    62: Rule(GPU_RESET, "internal micro-controller halt", REF_XID_CATALOGUE),
    64: Rule(GPU_RESET, "row remapping or page retirement recording failure", REF_XID_CATALOGUE),
    95: Rule(GPU_RESET, "uncontained ECC error", REF_XID_CATALOGUE),
    110: Rule(GPU_RESET, "security fault", REF_XID_CATALOGUE),
    119: Rule(GPU_RESET, "GSP RPC timeout", REF_XID_CATALOGUE),
    120: Rule(GPU_RESET, "GSP error", REF_XID_CATALOGUE),
    136: Rule(GPU_RESET, "reset-class error", REF_XID_CATALOGUE),
    140: Rule(GPU_RESET, "unrecovered ECC error", REF_XID_CATALOGUE),
    143: Rule(GPU_RESET, "reset-class error", REF_XID_CATALOGUE),
    155: Rule(GPU_RESET, "reset-class error", REF_XID_CATALOGUE),
    156: Rule(GPU_RESET, "reset-class error", REF_XID_CATALOGUE),
    158: Rule(GPU_RESET, "reset-class error", REF_XID_CATALOGUE),
    # Node reboot needed (gpu-health.md): 79 is a GPU fallen off the bus.
    79: Rule(NODE_REBOOT, "GPU has fallen off the bus", REF_XID_CATALOGUE),
    160: Rule(NODE_REBOOT, "reboot-class error", REF_XID_CATALOGUE),
    # Disputed (gpu-health.md): NVIDIA says reset, the k8s device plugin says application.
    109: Rule(DISPUTED, "context-switch timeout", REF_TABLE),
}
XID_GPU_RECOVERY = 154  # "GPU recovery action changed": the detail says what to do.
XID_109 = 109
XID_POLICIES = ("warn", "reset")

# XID 154's detail text, first match wins (NVIDIA XID catalogue, XID 154).
XID_154_DETAIL_RULES: tuple[tuple[str, Rule], ...] = (
    ("node reboot required", Rule(NODE_REBOOT, "recovery action: node reboot", REF_XID_CATALOGUE)),
    ("gpu reset required", Rule(GPU_RESET, "recovery action: GPU reset", REF_XID_CATALOGUE)),
    ("drain and reset", Rule(GPU_RESET, "recovery action: drain and reset", REF_XID_CATALOGUE)),
    ("drain p2p", Rule(GPU_RESET, "recovery action: drain peer-to-peer", REF_XID_CATALOGUE)),
)

# NVML's GPU recovery action field (NVML_GPU_RECOVERY_ACTION_*), per gpu-health.md.
RECOVERY_ACTIONS: dict[int, tuple[str, Rule | None]] = {
    0: ("NONE", None),
    1: ("GPU_RESET", Rule(GPU_RESET, "the driver asks for a GPU reset", REF_NVML)),
    2: ("NODE_REBOOT", Rule(NODE_REBOOT, "the driver asks for a node reboot", REF_NVML)),
    3: ("DRAIN_P2P", Rule(GPU_RESET, "the driver asks to drain peer-to-peer traffic", REF_NVML)),
    4: ("DRAIN_AND_RESET", Rule(GPU_RESET, "the driver asks to drain and reset", REF_NVML)),
    6: ("BUS_RESET", Rule(NODE_REBOOT, "the driver asks for a bus reset", REF_NVML)),
    7: ("SYSTEM_REBOOT", Rule(NODE_REBOOT, "the driver asks for a system reboot", REF_NVML)),
}

# Other agent events (the NVML event masks the agent listens to).
EVENT_RULES: dict[str, Rule] = {
    # NVML single-bit ECC event (mask 0x1): corrected, worth a trend (gpu-health.md, watch).
    "ecc_sbe": Rule(WATCH, "single-bit ECC error corrected", REF_TABLE),
    # NVML double-bit ECC event (mask 0x2): "volatile double-bit ECC > 0" is reset-class.
    "ecc_dbe": Rule(GPU_RESET, "double-bit ECC error", REF_TABLE),
    # NVML retirement failure (mask 0x800): "row-remap failure" is replace-class.
    "remap_failure": Rule(REPLACE, "row remapping failed", REF_TABLE),
    # NVML GPU unavailable (mask 0x4000) / GpuIsLost: XID 79 class, node reboot.
    "gpu_lost": Rule(NODE_REBOOT, "GPU stopped answering (fallen off the bus)", REF_TABLE),
}

# Clock-event (throttle) reason bits (NVML nvmlClocksEventReason*, gpu-health.md).
THROTTLE_SW_POWER_CAP = 0x4
THROTTLE_SW_THERMAL = 0x20
THROTTLE_HW_THERMAL = 0x40
THROTTLE_HW_POWER_BRAKE = 0x80
THERMAL_BITS = THROTTLE_SW_THERMAL | THROTTLE_HW_THERMAL
POWER_BITS = THROTTLE_SW_POWER_CAP | THROTTLE_HW_POWER_BRAKE
# Retired pages at which a GPU is flagged for replacement (gpu-health.md).
RETIRED_PAGES_REPLACE = 63
# PCIe replays per second above which the link is watched: DCGM's limit of 8 per minute.
PCIE_REPLAY_RATE_WATCH = 8 / 60

# Condition rules over a GPU reading: (source, code) → rule.
CONDITION_RULES: dict[tuple[str, str], Rule] = {
    ("thermal", "slowdown"): Rule(WATCH, "thermal slowdown", REF_TABLE),
    ("power", "throttle"): Rule(WATCH, "power throttling", REF_TABLE),
    ("ecc", "dbe_volatile"): Rule(GPU_RESET, "volatile double-bit ECC errors", REF_TABLE),
    ("remap", "pending"): Rule(GPU_RESET, "row remapping pending", REF_TABLE),
    ("remap", "failure"): Rule(REPLACE, "row remapping failed", REF_TABLE),
    ("ecc", "retired_pages"): Rule(REPLACE, "retired pages at the limit", REF_TABLE),
    ("pcie", "replay_rate"): Rule(WATCH, "PCIe replays above normal", REF_DCGM),
    ("nvlink", "down"): Rule(NODE_REBOOT, "NVLink link down", REF_TABLE),
    ("bus", "gpu_lost"): Rule(NODE_REBOOT, "GPU stopped answering (XID 79 class)", REF_TABLE),
    ("bus", "gpus_missing"): Rule(NODE_REBOOT, "fewer GPUs visible than expected", REF_TABLE),
}


@dataclass(frozen=True)
class Finding:
    """What a rule concluded: one future (or bumped) HealthEvent."""

    source: str
    code: str
    rule_class: str
    severity: str
    reason: str
    action: str
    gpu_index: int | None
    condition: bool = False  # holds while readings show it; else a point event
    ref: str = ""

    @property
    def drains(self) -> bool:
        """Whether it takes the GPU (or the node) out of service."""
        return self.rule_class in DRAINING_CLASSES

    @property
    def key(self) -> tuple[int | None, str, str]:
        """What identifies the same finding across batches (and its open event)."""
        return (self.gpu_index, self.source, self.code)


def condition_key(gpu_index: int | None, source: str, code: str) -> tuple[int | None, str, str]:
    """The key of a condition finding, as ``Finding.key``."""
    return (gpu_index, source, code)


def _finding(
    rule: Rule,
    *,
    source: str,
    code: str,
    gpu_index: int | None,
    reason: str,
    condition: bool = False,
) -> Finding:
    klass = CLASSES[rule.rule_class]
    return Finding(
        source=source,
        code=code,
        rule_class=klass.name,
        severity=klass.severity,
        reason=reason[:300],
        action=klass.action,
        gpu_index=gpu_index,
        condition=condition,
        ref=rule.ref,
    )


def _on(gpu_index: int | None) -> str:
    return f"GPU {gpu_index}" if gpu_index is not None else "a GPU"


def xid_rule(code: int, *, detail: str = "", xid_109_policy: str = "warn") -> Rule:
    """The rule an XID falls under, before any repetition."""
    if code == XID_GPU_RECOVERY:
        lowered = detail.lower()
        for needle, rule in XID_154_DETAIL_RULES:
            if needle in lowered:
                return rule
        return Rule(UNKNOWN, "GPU recovery action changed", REF_XID_CATALOGUE)
    if code == XID_109 and xid_109_policy == "reset":
        return Rule(GPU_RESET, XID_RULES[XID_109].meaning, "XID_109_POLICY=reset")
    return XID_RULES.get(code) or Rule(UNKNOWN, "XID not in Podium's table", REF_TABLE)


def xid_finding(
    code: int,
    *,
    gpu_index: int | None,
    detail: str = "",
    xid_109_policy: str = "warn",
    repeat_drain: int = 0,
    seen_in_day: int = 1,
    recurred_after_reset: bool = False,
) -> Finding:
    """The finding for one XID.

    ``seen_in_day`` counts this XID on this GPU over the last 24 h, this one included: a
    warn-only XID seen ``repeat_drain`` times escalates to a reset (gpu-health.md:
    "drain on repetition"). A reset-class XID that recurs after the GPU was put back in
    service flags it for replacement (gpu-health.md, replace hardware).
    """
    rule = xid_rule(code, detail=detail, xid_109_policy=xid_109_policy)
    reason = f"XID {code} on {_on(gpu_index)}: {rule.meaning}"
    if detail:
        reason = f"{reason} ({detail})"
    if rule.rule_class in WARN_ONLY_CLASSES and repeat_drain > 0 and seen_in_day >= repeat_drain:
        rule = Rule(GPU_RESET, rule.meaning, "XID_REPEAT_DRAIN")
        reason = f"{reason}; seen {seen_in_day} times in 24 h"
    elif rule.rule_class == GPU_RESET and recurred_after_reset:
        rule = Rule(REPLACE, rule.meaning, REF_TABLE)
        reason = f"{reason}; recurred after a reset"
    return _finding(rule, source="xid", code=str(code), gpu_index=gpu_index, reason=reason)


def event_finding(
    event: dict[str, Any],
    *,
    xid_109_policy: str = "warn",
    repeat_drain: int = 0,
    seen_in_day: int = 1,
    recurred_after_reset: bool = False,
) -> Finding | None:
    """The finding for one agent EVENT, or None when it calls for nothing."""
    kind = event["kind"]
    gpu = event.get("gpu")
    code = event.get("code")
    detail = str(event.get("detail") or "")
    if kind == "xid":
        if code is None:
            return None
        return xid_finding(
            int(code),
            gpu_index=gpu,
            detail=detail,
            xid_109_policy=xid_109_policy,
            repeat_drain=repeat_drain,
            seen_in_day=seen_in_day,
            recurred_after_reset=recurred_after_reset,
        )
    if kind == "recovery_action":
        name, rule = RECOVERY_ACTIONS.get(
            int(code) if code is not None else -1,
            (str(code), Rule(UNKNOWN, "unknown recovery action", REF_NVML)),
        )
        if rule is None:
            return None
        reason = f"{_on(gpu)}: {rule.meaning} ({name})"
        return _finding(rule, source="recovery", code=name, gpu_index=gpu, reason=reason)
    rule = EVENT_RULES.get(kind)
    if rule is None:
        return None
    source = {"ecc_sbe": "ecc", "ecc_dbe": "ecc", "remap_failure": "remap", "gpu_lost": "bus"}[kind]
    code_name = {"ecc_sbe": "sbe", "ecc_dbe": "dbe", "remap_failure": "failure"}.get(kind, kind)
    reason = f"{_on(gpu)}: {rule.meaning}" + (f" ({detail})" if detail else "")
    return _finding(rule, source=source, code=code_name, gpu_index=gpu, reason=reason)


def _condition(source: str, code: str, gpu_index: int, reason: str) -> Finding:
    rule = CONDITION_RULES[(source, code)]
    return _finding(
        rule, source=source, code=code, gpu_index=gpu_index, reason=reason, condition=True
    )


def reading_findings(
    gpu_index: int, reading: dict[str, Any], *, pcie_replay_rate: float | None = None
) -> list[Finding]:
    """The conditions one GPU reading shows; missing readings show nothing.

    ``pcie_replay_rate`` is the replay counter's growth per second since the previous
    reading, which the caller keeps.
    """
    found: list[Finding] = []
    on = f"GPU {gpu_index}"
    if reading.get("lost"):
        found.append(_condition("bus", "gpu_lost", gpu_index, f"{on} stopped answering"))
        return found
    temp, slowdown = reading.get("temp_c"), reading.get("temp_slowdown_c")
    throttle = int(reading.get("throttle") or 0)
    hot = temp is not None and slowdown is not None and temp >= slowdown
    if hot or throttle & THERMAL_BITS:
        why = f"{temp:g} °C, slowdown at {slowdown:g} °C" if hot else "thermal throttling"
        found.append(_condition("thermal", "slowdown", gpu_index, f"{on} thermal slowdown: {why}"))
    if throttle & POWER_BITS:
        what = "power brake" if throttle & THROTTLE_HW_POWER_BRAKE else "power cap"
        found.append(_condition("power", "throttle", gpu_index, f"{on} throttled by {what}"))
    dbe = reading.get("ecc_dbe")
    if dbe is not None and dbe > 0:
        found.append(
            _condition(
                "ecc", "dbe_volatile", gpu_index, f"{on}: {int(dbe)} volatile double-bit ECC errors"
            )
        )
    if reading.get("remap_failure"):
        found.append(_condition("remap", "failure", gpu_index, f"{on}: row remapping failed"))
    elif reading.get("remap_pending"):
        found.append(_condition("remap", "pending", gpu_index, f"{on}: row remapping pending"))
    retired = reading.get("retired_pages")
    if retired is not None and retired >= RETIRED_PAGES_REPLACE:
        found.append(
            _condition(
                "ecc", "retired_pages", gpu_index, f"{on}: {int(retired)} retired memory pages"
            )
        )
    if pcie_replay_rate is not None and pcie_replay_rate > PCIE_REPLAY_RATE_WATCH:
        per_minute = pcie_replay_rate * 60
        found.append(
            _condition(
                "pcie", "replay_rate", gpu_index, f"{on}: {per_minute:.0f} PCIe replays per minute"
            )
        )
    down = reading.get("nvlink_down")
    if down is not None and down > 0:
        found.append(
            _condition("nvlink", "down", gpu_index, f"{on}: {int(down)} NVLink link(s) down")
        )
    return found


def node_findings(*, expected_gpus: int, visible_gpus: int) -> list[Finding]:
    """Conditions of the node as a whole."""
    if visible_gpus < expected_gpus:
        rule = CONDITION_RULES[("bus", "gpus_missing")]
        reason = f"{visible_gpus} of {expected_gpus} GPUs visible"
        finding = _finding(
            rule, source="bus", code="gpus_missing", gpu_index=None, reason=reason, condition=True
        )
        return [finding]
    return []


def is_condition(source: str, code: str) -> bool:
    """Whether events of this source and code are condition findings."""
    return (source, code) in CONDITION_RULES


def condition_resolves(rule_class: str) -> bool:
    """Whether a condition's event closes by itself when the condition clears.

    Draining classes stay open until an operator puts the GPU or node back in service.
    """
    return rule_class not in DRAINING_CLASSES
