"""The training tables: datasets (``datasets``) and what jobs leave behind (``runs``)."""

from apps.training.models.datasets import Dataset, DatasetVersion, JobDataset
from apps.training.models.runs import Checkpoint, LogLine, MetricPoint

__all__ = ["Checkpoint", "Dataset", "DatasetVersion", "JobDataset", "LogLine", "MetricPoint"]
