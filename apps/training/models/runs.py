"""What a job's processes leave behind: output lines, reported metrics, checkpoints."""

from django.db import models


class LogLine(models.Model):
    """One line of a rank's output. ``seq`` is its line number in that rank's attempt;
    the row id orders lines across ranks and is the cursor readers follow."""

    job = models.ForeignKey("scheduler.Job", on_delete=models.CASCADE, related_name="log_lines")
    allocation = models.ForeignKey(
        "scheduler.Allocation", on_delete=models.CASCADE, related_name="log_lines"
    )
    attempt = models.PositiveIntegerField()
    rank = models.PositiveSmallIntegerField()
    seq = models.PositiveIntegerField()
    at = models.DateTimeField()
    line = models.TextField()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["allocation", "seq"], name="logline_allocation_seq")
        ]
        indexes = [models.Index(fields=["job", "id"], name="logline_job_id")]

    def __str__(self) -> str:
        return f"job {self.job_id} rank {self.rank} #{self.seq}"


class MetricPoint(models.Model):
    """One ``podium.sdk.report(step, **metrics)`` call of a job; ``seq`` is the line
    number of its marker in the rank's output (a line sent twice is stored once)."""

    job = models.ForeignKey("scheduler.Job", on_delete=models.CASCADE, related_name="metrics")
    allocation = models.ForeignKey(
        "scheduler.Allocation", on_delete=models.CASCADE, related_name="metrics"
    )
    seq = models.PositiveIntegerField()
    attempt = models.PositiveIntegerField()
    rank = models.PositiveSmallIntegerField(default=0)
    step = models.BigIntegerField()
    at = models.DateTimeField()
    values = models.JSONField(default=dict)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["allocation", "seq"], name="metricpoint_allocation_seq")
        ]
        indexes = [models.Index(fields=["job", "id"], name="metricpoint_job_id")]

    def __str__(self) -> str:
        return f"job {self.job_id} step {self.step}"


class Checkpoint(models.Model):
    """A checkpoint directory of a job, as last read from storage."""

    job = models.ForeignKey("scheduler.Job", on_delete=models.CASCADE, related_name="checkpoints")
    step = models.BigIntegerField()
    path = models.CharField(max_length=1024)
    attempt = models.PositiveIntegerField(null=True, blank=True)  # the attempt that wrote it
    size_bytes = models.BigIntegerField(default=0)
    file_count = models.PositiveIntegerField(default=0)
    complete = models.BooleanField(default=False)  # manifest present and files match it
    problem = models.CharField(max_length=300, blank=True)  # why it is not complete
    # When a worker read every file against the manifest's checksums; ``corrupt`` when
    # one did not match (the checkpoint is then never offered again).
    verified_at = models.DateTimeField(null=True, blank=True)
    corrupt = models.BooleanField(default=False)
    pinned = models.BooleanField(default=False)
    deleted = models.BooleanField(default=False)  # pruned, or gone from storage
    written_at = models.DateTimeField()
    checked_at = models.DateTimeField(null=True, blank=True)
    resumed_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["job", "-step"]
        constraints = [models.UniqueConstraint(fields=["job", "step"], name="checkpoint_job_step")]

    def __str__(self) -> str:
        return f"job {self.job_id} checkpoint {self.step}"
