"""The agent websocket protocol: one JSON object per text frame, ``type`` says which.

The agent connects to ``<server>/ws/agent/`` with ``Authorization: Bearer <token>``:
a join token (``pdj_…``) the first time, its own node token (``pdn_…``) after that.

Agent → console

- ``hello``: ``{"type": "hello", "protocol": 1, "name", "machine_id", "agent_version",
  "backend": "nvml" | "simulated" | "none", "gpu_status": "" | "no NVIDIA driver found" | …,
  "facts": {hostname, cpu_model, cpu_count, memory_total, os, kernel, python,
  driver_version, cuda_version}, "gpus": [{index, uuid, name, serial, memory_total_mib,
  pci_bus_id, nvlink_peers: [uuid…], simulated}], "time": agent epoch seconds,
  "jobs": [{"alloc", "pid", "started": epoch}]}``. Always the first frame; ``jobs`` lists
  the allocations whose processes run right now.
- ``batch``: ``{"type": "batch", "seq": n, "ts": epoch, "replay": bool,
  "gpus": [GPU_READING…], "host": {HOST_READING}, "events": [EVENT…]}``, one per interval.
  ``seq`` increases by one per batch over the agent's life; ``replay`` marks batches the
  console missed while disconnected (stored, not shown live).
- ``heartbeat``: ``{"type": "heartbeat", "ts": epoch}`` every heartbeat interval.
- ``time``: ``{"type": "time", "t0": console time echoed, "t1": agent time}``.
- ``fault_result``: ``{"type": "fault_result", "id", "ok": bool, "detail": str}``.
- ``job_started``: ``{"type": "job_started", "alloc", "pid", "pgid", "ts"}``: the process
  of an allocation runs (``ts`` is when it started).
- ``job_exited``: ``{"type": "job_exited", "alloc", "exit_code": int | null, "signal":
  int | null, "ts", "reason": str, "tail": str}``. ``signal`` is the signal that ended the
  process (``exit_code`` is then null). ``reason`` is "" for an ordinary end, else one of
  ``REASON_*`` ("start failed: <error>", "killed after grace", "fenced: console
  unreachable for N s", "unknown to this agent", "lost: the agent restarted"). ``tail``
  is the last ``TAIL_MAX_BYTES`` of the output. Kept, on disk too, until ``job_ack``;
  the unacknowledged ones are sent again right after every welcome.
- ``job_output``: ``{"type": "job_output", "alloc", "seq", "lines": [str], "ts"}``:
  stdout and stderr merged, ``seq`` the line number (from 0, per allocation) of the
  first line. At most one message per allocation every 0.5 s and ``OUTPUT_MAX_LINES``
  lines per message, each cut at ``OUTPUT_LINE_MAX_CHARS`` characters. Output made
  while disconnected is not sent (its line numbers are skipped), nor lines the agent
  could not send in time (a jump in ``seq``); all of it stays in the node's log file.

A GPU_READING has ``i`` (index) and any of the keys in ``GPU_READING_KEYS``; a key that
is absent or null was not available (NotSupported), never zero. ``lost: true`` says
the GPU stopped answering (NVML's GpuIsLost, or fallen off the bus). ``procs`` lists
``{"pid", "name", "user", "mem_mib"}``, plus ``"job"`` (its id) for a process of a job
the agent runs.

An EVENT is ``{"kind": "xid" | "ecc_sbe" | "ecc_dbe" | "remap_failure" | "gpu_lost"
| "recovery_action", "gpu": index, "code": int | None, "ts": epoch, "detail": str}``.

Console → agent

- ``welcome``: ``{"type": "welcome", "node_id", "name", "interval", "heartbeat",
  "node_token"?: only after a join, "ack": last stored seq or null, "fence_after":
  seconds or null}``. With ``fence_after``, an agent that hears nothing from the console
  for longer than that kills its job processes (fencing); null: never.
- ``heartbeat``: ``{"type": "heartbeat", "ts": epoch}`` whenever the console sent nothing
  else for a heartbeat interval, so that a connected agent never fences its jobs.
- ``ack``: ``{"type": "ack", "seq": n}``: every batch up to ``seq`` is stored; the agent
  may drop them from its replay buffer.
- ``time``: ``{"type": "time", "t0": console epoch}``; the agent answers at once.
- ``inject_fault``: ``{"type": "inject_fault", "id", "gpu": index, "fault": one of
  FAULTS, "code": int | None}``; only simulated GPUs accept it.
- ``job_start``: ``{"type": "job_start", "alloc", "job", "attempt", "rank", "command":
  str (run with /bin/sh -c), "env": {str: str}, "workdir": str | null (null: a directory
  of its own in the agent's state directory), "gpus": [index…], "grace": seconds}``. The
  process gets its own process group, ``CUDA_VISIBLE_DEVICES`` and
  ``PODIUM_ALLOCATION_ID``. Answered with ``job_started``, or ``job_exited`` when it
  cannot start; a repeated ``job_start`` is answered with the current state, never a
  second process.
- ``job_signal``: ``{"type": "job_signal", "alloc", "signal": "term" | "kill", "grace":
  seconds | null}``. ``term`` sends SIGTERM to the process group and SIGKILL after
  ``grace`` (null: the start's grace) if it still runs; ``kill`` sends SIGKILL at once.
  An allocation the agent does not know is answered with ``job_exited`` (reason "unknown
  to this agent").
- ``job_ack``: ``{"type": "job_ack", "alloc"}``: the exit is stored; the agent forgets it.

Close codes: see ``CLOSE_*``.
"""

PROTOCOL_VERSION = 1
AGENT_PATH = "/ws/agent/"

JOIN_TOKEN_SCHEME = "pdj"  # noqa: S105  (token scheme names, not secrets)
NODE_TOKEN_SCHEME = "pdn"  # noqa: S105

# Agent → console.
HELLO = "hello"
BATCH = "batch"
HEARTBEAT = "heartbeat"
TIME = "time"
FAULT_RESULT = "fault_result"
JOB_STARTED = "job_started"
JOB_EXITED = "job_exited"
JOB_OUTPUT = "job_output"
# Console → agent.
WELCOME = "welcome"
ACK = "ack"
INJECT_FAULT = "inject_fault"
JOB_START = "job_start"
JOB_SIGNAL = "job_signal"
JOB_ACK = "job_ack"

# The signals of ``job_signal``.
SIGNAL_TERM = "term"  # SIGTERM to the process group, SIGKILL after the grace
SIGNAL_KILL = "kill"  # SIGKILL at once

OUTPUT_MAX_LINES = 200  # lines per job_output message
OUTPUT_LINE_MAX_CHARS = 4000  # longer lines are cut
TAIL_MAX_BYTES = 4096  # the output kept for job_exited

# The reasons of ``job_exited`` ("" for an ordinary end). Two are prefixes:
# "start failed: <error>" and "fenced: console unreachable for N s".
REASON_START_FAILED = "start failed"
REASON_KILLED_AFTER_GRACE = "killed after grace"
REASON_FENCED = "fenced"
REASON_UNKNOWN = "unknown to this agent"
REASON_LOST = "lost: the agent restarted"

GPU_READING_KEYS = (
    "util",  # GPU utilization %
    "mem_util",  # memory-controller utilization %
    "mem_used_mib",
    "mem_total_mib",
    "temp_c",
    "mem_temp_c",
    "temp_slowdown_c",  # the GPU's slowdown threshold
    "power_w",
    "power_limit_w",
    "energy_j",
    "fan_pct",
    "sm_clock_mhz",
    "sm_clock_max_mhz",
    "mem_clock_mhz",
    "throttle",  # clock-event reasons bitmask
    "pcie_gen",
    "pcie_width",
    "pcie_replay",  # replay counter (cumulative)
    "ecc_sbe",  # volatile single-bit ECC errors
    "ecc_dbe",  # volatile double-bit ECC errors
    "retired_pages",
    "remap_pending",  # bool
    "remap_failure",  # bool
    "nvlink_down",  # number of NVLink links down
)
HOST_READING_KEYS = (
    "cpu_percent",
    "mem_used_bytes",
    "mem_total_bytes",
    "load1",
    "load5",
    "load15",
    "disk_used_bytes",
    "disk_total_bytes",
    "net_rx_bps",
    "net_tx_bps",
)

EVENT_KINDS = ("xid", "ecc_sbe", "ecc_dbe", "remap_failure", "gpu_lost", "recovery_action")

# Faults a simulated GPU accepts.
FAULT_XID = "xid"  # an XID with ``code``
FAULT_ECC_DBE = "ecc_dbe"  # a volatile double-bit ECC error
FAULT_OVERHEAT = "overheat"  # temperature climbs past the slowdown threshold
FAULT_FALL_OFF_BUS = "fall_off_bus"  # XID 79, the GPU stops answering
FAULT_CLEAR = "clear"  # back to normal (as after a reset)
FAULTS = (FAULT_XID, FAULT_ECC_DBE, FAULT_OVERHEAT, FAULT_FALL_OFF_BUS, FAULT_CLEAR)

# Websocket close codes the console uses; the agent acts on them.
CLOSE_BAD_TOKEN = 4401  # unknown, malformed or expired token: stop, ask for a new join token
CLOSE_REVOKED = 4403  # the node (or join token) was revoked: stop for good
CLOSE_PROTOCOL = 4400  # first frame was not a valid hello
CLOSE_NAME_TAKEN = 4409  # another live node already has this name
CLOSE_REPLACED = 4000  # a newer connection of the same node took over
