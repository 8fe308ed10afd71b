"""API shapes of what jobs left behind: metrics, checkpoints, goodput."""

from datetime import datetime

from ninja import Field, Schema


class LogFilterIn(Schema):
    since: int = Field(0, ge=0, description="The cursor of the last response (0: from the start).")
    rank: int | None = Field(None, ge=0, description="Only this rank's lines, unprefixed.")
    attempt: int | None = Field(None, ge=1, description="Only this attempt's lines.")
    q: str = Field("", max_length=200, description="Only lines containing this text.")
    limit: int = Field(1000, ge=1, le=10_000)


class MetricPointOut(Schema):
    id: int
    attempt: int
    rank: int
    step: int
    at: datetime
    values: dict[str, float]


class MarkerOut(Schema):
    at: datetime
    attempt: int
    kind: str
    reason: str


class MetricsOut(Schema):
    points: list[MetricPointOut]
    cursor: int = Field(description="Pass as `after` to read only newer points.")
    markers: list[MarkerOut] = Field(description="Faults, requeues and resumes on the timeline.")


class CheckpointOut(Schema):
    step: int
    path: str
    attempt: int | None
    size_bytes: int
    file_count: int
    complete: bool
    problem: str
    pinned: bool
    corrupt: bool = Field(description="Its files did not match the manifest's checksums.")
    verified_at: datetime | None = Field(description="When its checksums were read.")
    written_at: datetime
    checked_at: datetime | None
    resumed_count: int


class GoodputOut(Schema):
    wall_seconds: float
    productive_seconds: float
    redone_seconds: float = Field(description="Work lost after the last kept checkpoint.")
    overhead_seconds: float = Field(description="Detection, queueing, start-up and loading.")
    interruptions: int
    ratio: float | None = Field(description="Productive share of the wall time.")


class WorkspaceGoodputOut(GoodputOut):
    workspace_id: int
    jobs: int
    days: float
